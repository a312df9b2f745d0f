package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
)

// forwardFlags collects repeated -forward flags.
type forwardFlags []qemu.Forward

func (f *forwardFlags) String() string { return fmt.Sprint(*f) }

func (f *forwardFlags) Set(s string) error {
	fw, err := qemu.ParseForward(s)
	if err != nil {
		return err
	}
	*f = append(*f, fw)
	return nil
}

func runRun(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fs := newFlagSet("run", "-image FILE [-accel auto|kvm|tcg] [-firmware direct|uefi] [-forward tcp:HOST:GUEST]... [flags]", stderr)
	dir := fs.String("C", ".", "appliance directory; the default image is DIR/NAME-vm-ARCH.img as written by ingot build")
	image := fs.String("image", "", "disk image built by 'ingot build'")
	accelFlag := fs.String("accel", "auto", "accelerator: auto (KVM when a KVM guest really boots here, else TCG), kvm or tcg")
	memory := fs.Int("memory", 512, "guest memory in MiB")
	cpus := fs.Int("cpus", 1, "guest CPUs")
	vsockMode := fs.String("vsock", "user", "vsock transport: user (built-in vhost-user backend), kernel (host vhost_vsock), none")
	cid := fs.Uint("cid", vm.GuestCID, "guest CID with -vsock kernel")
	firmware := fs.String("firmware", vm.FirmwareDirect, "how the guest boots: direct (ingot's loader picks the slot and boots its kernel: fast) or uefi (OVMF/AAVMF and the image's own systemd-boot, as on any hypervisor or cloud; a private variable store in the run directory)")
	runDir := fs.String("run-dir", "", "directory for sockets and extracted boot files (default: per image under $XDG_RUNTIME_DIR or /tmp)")
	var forwards forwardFlags
	fs.Var(&forwards, "forward", "forward a host port to the guest, PROTO:[ADDR:]HOSTPORT:GUESTPORT (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *image == "" {
		matches, _ := filepath.Glob(filepath.Join(*dir, "*-vm-*.img"))
		if len(matches) != 1 {
			return usageError{"-image is required (found no single DIR/*-vm-*.img)"}
		}
		*image = matches[0]
	}
	accel, err := qemu.ParseAccel(*accelFlag)
	if err != nil {
		return usageError{err.Error()}
	}
	img, err := filepath.Abs(*image)
	if err != nil {
		return err
	}
	if *runDir == "" {
		if *runDir, err = vm.DefaultRunDir(img); err != nil {
			return err
		}
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "ingot run: "+format+"\n", a...) }
	mode := vm.Vsock(*vsockMode)
	switch mode {
	case vm.VsockUser:
		p := vm.VsockPath(*runDir)
		logf("vsock: unix://%s (guest CID %d; guest→host port P reaches %s_P)", p, vm.GuestCID, p)
	case vm.VsockKernel:
		logf("vsock: vsock://%d:PORT (host kernel vhost_vsock)", *cid)
	}
	if *firmware != vm.FirmwareDirect && *firmware != vm.FirmwareUEFI {
		return usageError{fmt.Sprintf("-firmware %q: want %s or %s", *firmware, vm.FirmwareDirect, vm.FirmwareUEFI)}
	}
	err = vm.Run(ctx, vm.Config{
		Image: img, RunDir: *runDir, Accel: accel, MemoryMiB: *memory, CPUs: *cpus,
		Forwards: forwards, Vsock: mode, KernelCID: uint32(*cid), Console: stdout, Logf: logf,
		Firmware: *firmware,
	})
	if errors.Is(err, vm.ErrSilentResets) {
		return fmt.Errorf("%w: give the guest more with -memory (now %d MiB)", err, *memory)
	}
	return err
}
