package assemble

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"strings"

	"github.com/ingotdev/ingot/packer/format/spec"
	"github.com/ingotdev/ingot/packer/squashfs"
)

// rootSquashfsOptions are the options of every target's root squashfs,
// after the target's own (its compression): the appliance's own programs
// are stored uncompressed (see ownExecutable).
func rootSquashfsOptions(target ...squashfs.Option) []squashfs.Option {
	return append(target, squashfs.WithUncompressed(ownExecutable))
}

// ownExecutable says whether the root file at path, which begins with
// head, is one of the appliance's own programs, whose data blocks the
// root stores uncompressed: an ELF executable or shared object (ingot-init,
// the Go services, the system services such as the DHCP and Wi-Fi
// clients) outside the flattened OCI images under spec.ContainerRoot.
//
// A one-line change to a Go program moves most of its code, which changes
// nearly every compressed block of it but few bytes of it raw: stored
// raw, a changed block is sent as a small patch against the running slot
// in a delta update. Image files and everything else (kernel modules,
// firmware, configuration) stay compressed.
func ownExecutable(path string, head []byte) bool {
	if path == spec.ContainerRoot || strings.HasPrefix(path, spec.ContainerRoot+"/") {
		return false
	}
	return isELFProgram(head)
}

// isELFProgram says whether head begins an ELF file of type executable
// (ET_EXEC) or position-independent executable / shared object (ET_DYN);
// relocatable objects such as kernel modules are not programs.
func isELFProgram(head []byte) bool {
	if len(head) < 18 || !bytes.HasPrefix(head, []byte(elf.ELFMAG)) {
		return false
	}
	var order binary.ByteOrder
	switch elf.Data(head[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return false
	}
	switch elf.Type(order.Uint16(head[16:])) {
	case elf.ET_EXEC, elf.ET_DYN:
		return true
	}
	return false
}
