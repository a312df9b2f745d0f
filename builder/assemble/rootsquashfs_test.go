package assemble

import (
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"testing"
)

// elfHead returns the first 64 bytes of an ELF file of type typ in the
// given byte order.
func elfHead(data elf.Data, typ elf.Type) []byte {
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h[elf.EI_DATA] = byte(data)
	h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var order binary.ByteOrder = binary.LittleEndian
	if data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	order.PutUint16(h[16:], uint16(typ))
	return h
}

func TestOwnExecutable(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	testBinary := make([]byte, 4096)
	if _, err := io.ReadFull(f, testBinary); err != nil {
		t.Fatal(err)
	}

	exec := elfHead(elf.ELFDATA2LSB, elf.ET_EXEC)
	for _, c := range []struct {
		path string
		head []byte
		want bool
	}{
		{"/init", exec, true},
		{"/usr/bin/hello", testBinary, true},
		{"/usr/lib/ingot/dhcp", elfHead(elf.ELFDATA2LSB, elf.ET_DYN), true},
		{"/usr/lib/ingot/wifi", elfHead(elf.ELFDATA2MSB, elf.ET_EXEC), true},
		// Kernel modules are relocatable objects, not programs.
		{"/lib/modules/6.1/kernel/brcmfmac.ko", elfHead(elf.ELFDATA2LSB, elf.ET_REL), false},
		{"/usr/lib/ingot/core", elfHead(elf.ELFDATA2LSB, elf.ET_CORE), false},
		// Files of flattened images stay compressed, programs or not.
		{"/oci/web/rootfs/bin/busybox", exec, false},
		{"/oci/.debug/rootfs/bin/sh", exec, false},
		{"/oci", exec, false},
		// A name that merely starts like the image directory is not in it.
		{"/ocitool", exec, true},
		{"/etc/ingot/appliance.json", []byte(`{"services":[]}`), false},
		{"/lib/firmware/brcm/x.bin", []byte("\x7fELF"), false},
		{"/usr/bin/bad-data", append(append([]byte{}, exec[:elf.EI_DATA]...), make([]byte, 60)...), false},
		{"/usr/bin/empty", nil, false},
	} {
		if got := ownExecutable(c.path, c.head); got != c.want {
			t.Errorf("ownExecutable(%q, % x…) = %v, want %v", c.path, c.head[:min(len(c.head), 18)], got, c.want)
		}
	}
}
