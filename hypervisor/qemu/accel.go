package qemu

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Accel selects how QEMU executes guest code.
type Accel string

// The accelerators ingot knows. AccelAuto picks KVM when a probe shows it
// really runs guest code, and TCG otherwise.
const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// ParseAccel checks an -accel flag value.
func ParseAccel(s string) (Accel, error) {
	switch a := Accel(s); a {
	case AccelAuto, AccelKVM, AccelTCG:
		return a, nil
	}
	return "", fmt.Errorf("accel %q: want auto, kvm or tcg", s)
}

// kvmProbeTimeout bounds the test run of a vCPU. A working KVM halts the
// probe guest in microseconds; nested KVM on some clouds never returns.
const kvmProbeTimeout = 2 * time.Second

// Resolve turns AccelAuto into the accelerator to use for a guest of the
// given architecture (GOARCH spelling) on this host. KVM is chosen only for
// a guest of the host's own architecture and only when a probe VM runs.
func Resolve(ctx context.Context, a Accel, guestArch string) (Accel, string) {
	if a != AccelAuto {
		return a, "requested"
	}
	if guestArch != runtime.GOARCH {
		return AccelTCG, fmt.Sprintf("guest %s differs from host %s", guestArch, runtime.GOARCH)
	}
	if err := ProbeKVM(ctx); err != nil {
		return AccelTCG, err.Error()
	}
	return AccelKVM, "kvm probe ran a vCPU"
}

// ioctl numbers from linux/kvm.h (x86-64 layouts where they matter).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84

	kvmAPIVersion = 12
	kvmExitHLT    = 5

	kvmRegsBytes  = 144
	kvmSregsBytes = 312
	probeMemBytes = 4096
)

func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// ProbeKVM opens /dev/kvm and runs one vCPU on a single HLT instruction.
// It returns nil only when the vCPU exits with KVM_EXIT_HLT in time, which
// catches hosts where /dev/kvm exists but guests never make progress.
func ProbeKVM(ctx context.Context) error {
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("kvm: open /dev/kvm: %w", err)
	}
	defer unix.Close(kvm)
	if v, err := ioctl(kvm, kvmGetAPIVersion, 0); err != nil || v != kvmAPIVersion {
		return fmt.Errorf("kvm: api version %d (%v), want %d", v, err, kvmAPIVersion)
	}
	if runtime.GOARCH != "amd64" {
		// Only the x86 register layout is encoded below; creating a VM is
		// as far as the probe goes elsewhere.
		vm, err := ioctl(kvm, kvmCreateVM, 0)
		if err != nil {
			return fmt.Errorf("kvm: create vm: %w", err)
		}
		unix.Close(int(vm))
		return nil
	}
	vmFD, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("kvm: create vm: %w", err)
	}
	vm := int(vmFD)
	defer unix.Close(vm)

	mem, err := unix.Mmap(-1, 0, probeMemBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("kvm: guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	mem[0] = 0xf4 // hlt
	region := struct {
		slot, flags                uint32
		guestPhys, size, userspace uint64
	}{0, 0, 0, probeMemBytes, uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fmt.Errorf("kvm: set memory region: %w", err)
	}
	vcpuFD, err := ioctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("kvm: create vcpu: %w", err)
	}
	vcpu := int(vcpuFD)
	defer unix.Close(vcpu)
	runSize, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("kvm: vcpu mmap size: %w", err)
	}
	run, err := unix.Mmap(vcpu, 0, int(runSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("kvm: map vcpu: %w", err)
	}
	defer unix.Munmap(run)

	var sregs [kvmSregsBytes]byte
	if _, err := ioctl(vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("kvm: get sregs: %w", err)
	}
	// cs is the first kvm_segment: base u64 at 0, selector u16 at 12.
	for i := 0; i < 8; i++ {
		sregs[i] = 0
	}
	sregs[12], sregs[13] = 0, 0
	if _, err := ioctl(vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return fmt.Errorf("kvm: set sregs: %w", err)
	}
	var regs [kvmRegsBytes / 8]uint64
	regs[16] = 0 // rip
	regs[17] = 2 // rflags: bit 1 is reserved and must be set
	if _, err := ioctl(vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return fmt.Errorf("kvm: set regs: %w", err)
	}

	type result struct{ err error }
	done := make(chan result, 1)
	tidc := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		// The thread may be left in a bad state if KVM_RUN was interrupted;
		// never hand it back to the scheduler.
		tidc <- unix.Gettid()
		_, err := ioctl(vcpu, kvmRun, 0)
		done <- result{err}
	}()
	tid := <-tidc
	timer := time.NewTimer(kvmProbeTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return fmt.Errorf("kvm: run probe vcpu: %w", r.err)
		}
		if reason := *(*uint32)(unsafe.Pointer(&run[8])); reason != kvmExitHLT {
			return fmt.Errorf("kvm: probe vcpu exited with reason %d, want HLT", reason)
		}
		return nil
	case <-ctx.Done():
	case <-timer.C:
	}
	// Kick the vCPU thread out of KVM_RUN with a signal the Go runtime
	// already handles, then wait briefly for it so the fds can be closed.
	for i := 0; i < 20; i++ {
		_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
		select {
		case <-done:
			return fmt.Errorf("kvm: probe vcpu did not halt within %v (nested KVM?)", kvmProbeTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("kvm: probe vcpu hung in KVM_RUN for %v and ignored signals", kvmProbeTimeout)
}
