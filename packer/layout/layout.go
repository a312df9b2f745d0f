// Package layout is the on-disk contract of an ingot image, shared by the
// packer that writes it, the host-side boot loader and the guest that read
// it: partition names, boot-partition file names, and the image info file.
// It has no dependencies so the guest binary can use it cheaply.
package layout

// Partition names in the GPT, in disk order.
const (
	BootPartition  = "boot"
	RootAPartition = "root-a"
	RootBPartition = "root-b"
	PermPartition  = "perm"
)

// Files on the FAT boot partition.
const (
	KernelFile  = "vmlinuz"
	InitrdFile  = "initrd.img"
	CmdlineFile = "cmdline.txt"
	SlotFile    = "slot.json"
	InfoFile    = "ingot.json"
)

// PerSlot reports whether each root slot has its own copy of the boot
// file name: the kernel, the initramfs and the command line belong to the
// root they boot, so an update that changes the kernel writes the new one
// for its slot only, and a rollback boots the old slot with its old kernel.
func PerSlot(name string) bool {
	return name == KernelFile || name == InitrdFile || name == CmdlineFile
}

// SlotBootFile is the name on the boot partition of slot's copy of the
// per-slot boot file name: "vmlinuz.b". Images written before per-slot
// files existed have only the shared name, which boot loaders fall back to.
func SlotBootFile(name, slot string) string { return name + "." + slot }

// Info describes an image; the packer writes it to the boot partition as
// InfoFile so tools can tell what an image is without a config file.
type Info struct {
	Name    string `json:"name"`
	Target  string `json:"target"`
	Arch    string `json:"arch"`
	BuildID string `json:"build_id"`
}

// Kernel command-line parameters that tie the boot stages together.
const (
	ParamRoot  = "ingot.root"  // PARTUUID=<guid> of the root slot to mount
	ParamSlot  = "ingot.slot"  // a or b
	ParamTrial = "ingot.trial" // 1 on a trial boot
	ParamBoot  = "ingot.boot"  // PARTUUID=<guid> of the boot partition
	ParamPerm  = "ingot.perm"  // PARTUUID=<guid> of the perm partition
	ParamIP    = "ingot.ip"    // ADDR/PREFIX,GATEWAY,DNS for a static network
)
