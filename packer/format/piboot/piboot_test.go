package piboot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/slot"
)

const config = "# ingot\narm_64bit=1\nos_prefix=slot-a/\nkernel=vmlinuz\ncmdline=cmdline.txt\nenable_uart=1\n"

func TestSetPrefix(t *testing.T) {
	got, err := SetPrefix([]byte(config), "b")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(config, "slot-a/", "slot-b/")
	if string(got) != want {
		t.Errorf("SetPrefix(b) = %q, want %q", got, want)
	}
	if s, err := Prefix(got); err != nil || s != "b" {
		t.Errorf("Prefix = %q, %v, want b", s, err)
	}
	for _, tc := range []struct {
		name, config string
		slot         slot.Name
		want         string
	}{
		{"no line", "arm_64bit=1\n", "b", "no os_prefix= line"},
		{"before os_prefix", "kernel=slot-a/vmlinuz\ncmdline=slot-a/cmdline.txt\n", "b", "no os_prefix= line"},
		{"two lines", config + "os_prefix=slot-b/\n", "b", "more than one os_prefix= line"},
		{"foreign prefix", "os_prefix=recovery/\n", "b", `"os_prefix=recovery/" is not "os_prefix=slot-X/"`},
		{"no slash", "os_prefix=slot-a\n", "b", `is not "os_prefix=slot-X/"`},
		{"too long", config + strings.Repeat("#\n", 300), "b", "single sector"},
		{"bad slot", config, "c", `slot "c" is not a or b`},
	} {
		if _, err := SetPrefix([]byte(tc.config), tc.slot); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: SetPrefix = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestTrialAndConfirm(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ConfigFile)
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	var fw Firmware
	if err := fw.Trial(dir, "b"); err != nil {
		t.Fatal(err)
	}
	try, _ := os.ReadFile(filepath.Join(dir, TrybootFile))
	if s, err := Prefix(try); err != nil || s != "b" {
		t.Errorf("tryboot.txt selects %q, %v; want b", s, err)
	}
	if s, err := Active(dir); err != nil || s != "a" {
		t.Errorf("Active during the trial = %q, %v, want a (config.txt untouched)", s, err)
	}
	if err := fw.Activate(dir, "b"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if s, _ := Prefix(got); s != "b" || len(got) != len(config) {
		t.Errorf("config.txt after Activate(b) = %q, want slot b at the same size", got)
	}
	if _, err := os.Stat(filepath.Join(dir, TrybootFile)); !os.IsNotExist(err) {
		t.Errorf("tryboot.txt after confirm: %v, want it removed", err)
	}
	if err := fw.Cancel(dir); err != nil {
		t.Errorf("Cancel without tryboot.txt = %v", err)
	}
}
