package kernel

import (
	"debug/elf"
	"reflect"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want modinfo
	}{
		{"", modinfo{}},
		{"name=virtio_pci\x00depends=virtio_ring,virtio\x00vermagic=6.1.0 SMP\x00",
			modinfo{name: "virtio_pci", depends: []string{"virtio_ring", "virtio"}, vermagic: "6.1.0 SMP"}},
		{"depends=\x00alias=pci:v1AF4*\x00alias=virtio:d*\x00\x00\x00junk\x00softdep=pre: crc32c",
			modinfo{aliases: []string{"pci:v1AF4*", "virtio:d*"}, softdeps: []string{"pre: crc32c"}}},
		{"depends=a-b,,c\x00license=GPL\x00description=x=y", modinfo{depends: []string{"a_b", "c"}}},
	} {
		if got := parseModinfo([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseModinfo(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestReadModinfo(t *testing.T) {
	mi, err := readModinfo(moduleELF(elf.EM_AARCH64, "name=vfat", "depends=fat"))
	if err != nil {
		t.Fatalf("readModinfo(moduleELF) = %v", err)
	}
	if mi.name != "vfat" || !reflect.DeepEqual(mi.depends, []string{"fat"}) || mi.machine != elf.EM_AARCH64 {
		t.Errorf("readModinfo(moduleELF) = %+v, want vfat depending on fat, AArch64", mi)
	}
	noInfo := moduleELF(elf.EM_X86_64, "name=x")
	copy(noInfo[len(noInfo)-3*64+64:], make([]byte, 4)) // .modinfo section loses its name
	exec := moduleELF(elf.EM_X86_64)
	exec[16] = byte(elf.ET_EXEC)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"not elf", []byte("hello"), `not an ELF file: starts with "hell"`},
		{"truncated", moduleELF(elf.EM_X86_64)[:20], "ELF: EOF"},
		{"executable", exec, "ELF type ET_EXEC, want a relocatable module (ET_REL)"},
		{"no section", noInfo, "no .modinfo section"},
	} {
		if _, err := readModinfo(tc.in); err == nil || err.Error() != tc.want {
			t.Errorf("readModinfo(%s) = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestNameFromPath(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/nls/nls_iso8859-1.ko": "nls_iso8859_1",
		"kernel/fs/ext4/ext4.ko":         "ext4",
		"mac-roman.ko":                   "mac_roman",
	} {
		if got := nameFromPath(in); got != want {
			t.Errorf("nameFromPath(%q) = %q, want %q", in, got, want)
		}
	}
}
