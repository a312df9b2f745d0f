package kernel

import (
	"strings"
	"testing"
)

func testKernel() *Kernel {
	k := &Kernel{Version: "1.0", Modules: map[string]*Module{}, Builtin: map[string]bool{"crc32c": true}}
	for _, m := range []struct {
		name string
		deps string
	}{
		{"a", "c,b"},
		{"b", "d"},
		{"c", "d,crc32c"},
		{"d", ""},
		{"e", "d"},
		{"f_g", "a"},
		{"loop1", "loop2"},
		{"loop2", "loop3"},
		{"loop3", "loop1"},
		{"needs_ghost", "ghost"},
	} {
		var deps []string
		if m.deps != "" {
			deps = strings.Split(m.deps, ",")
		}
		k.Modules[m.name] = &Module{Name: m.name, Path: "kernel/" + m.name + ".ko", Depends: deps, Data: []byte(m.name)}
	}
	return k
}

func TestClosure(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"d"}, "d"},
		// Dependencies in name order (b before c), each after its own.
		{[]string{"a"}, "d,b,c,a"},
		// Requested order is kept where dependencies allow.
		{[]string{"e", "a"}, "d,e,b,c,a"},
		{[]string{"a", "e"}, "d,b,c,a,e"},
		{[]string{"f-g", "a", "f_g"}, "d,b,c,a,f_g"},
		{[]string{"crc32c", "d"}, "d"},
	} {
		mods, err := testKernel().Closure(tc.in...)
		if err != nil {
			t.Errorf("Closure(%q) = %v", tc.in, err)
			continue
		}
		var names []string
		for _, m := range mods {
			names = append(names, m.Name)
		}
		if got := strings.Join(names, ","); got != tc.want {
			t.Errorf("Closure(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestClosureErrors(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"a", "nope"}, `kernel 1.0: module "nope": not in the package and not built in`},
		{[]string{"needs_ghost"}, `kernel 1.0: module "ghost" (needed by "needs_ghost"): not in the package`},
		{[]string{"d", "loop2"}, `kernel 1.0: module dependency cycle: loop2 -> loop3 -> loop1 -> loop2`},
	} {
		_, err := testKernel().Closure(tc.in...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Closure(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestDefaultVMModulesIsACopy(t *testing.T) {
	DefaultVMModules()[0] = "changed"
	if DefaultVMModules()[0] != "virtio_pci" {
		t.Errorf("DefaultVMModules()[0] = %q after a caller changed its copy", DefaultVMModules()[0])
	}
}
