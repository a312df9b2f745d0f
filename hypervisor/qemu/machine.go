// Package qemu boots appliance images in QEMU: it builds the command line
// (direct kernel boot, virtio disk and network, serial console, vsock),
// chooses an accelerator that really works on this host, and reports why
// the guest stopped so a caller can implement reboot and poweroff.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Forward is one host→guest port forward of QEMU user networking.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostAddr  string // address to bind on the host; "" = 127.0.0.1
	HostPort  int
	GuestPort int
}

// ParseForward parses "tcp:HOSTPORT:GUESTPORT" or
// "tcp:HOSTADDR:HOSTPORT:GUESTPORT".
func ParseForward(s string) (Forward, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 && len(parts) != 4 {
		return Forward{}, fmt.Errorf("forward %q: want PROTO:HOSTPORT:GUESTPORT or PROTO:HOSTADDR:HOSTPORT:GUESTPORT", s)
	}
	f := Forward{Proto: parts[0]}
	if f.Proto != "tcp" && f.Proto != "udp" {
		return Forward{}, fmt.Errorf("forward %q: protocol %q: want tcp or udp", s, f.Proto)
	}
	ports := parts[1:]
	if len(parts) == 4 {
		f.HostAddr = parts[1]
		ports = parts[2:]
	}
	var err error
	if f.HostPort, err = parsePort(ports[0]); err != nil {
		return Forward{}, fmt.Errorf("forward %q: host port: %w", s, err)
	}
	if f.GuestPort, err = parsePort(ports[1]); err != nil {
		return Forward{}, fmt.Errorf("forward %q: guest port: %w", s, err)
	}
	return f, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	return p, nil
}

func (f Forward) hostfwd() string {
	addr := f.HostAddr
	if addr == "" {
		addr = "127.0.0.1"
	}
	return fmt.Sprintf("hostfwd=%s:%s:%d-:%d", f.Proto, addr, f.HostPort, f.GuestPort)
}

// GuestNetwork is the address plan of QEMU user networking (slirp): the
// guest is always 10.0.2.15 with gateway 10.0.2.2 and DNS 10.0.2.3. The
// loader passes it on the kernel command line so the guest needs no DHCP.
const GuestNetwork = "10.0.2.15/24,10.0.2.2,10.0.2.3"

// Machine describes one boot of a VM.
type Machine struct {
	Arch      string // guest architecture in GOARCH spelling: amd64 or arm64
	MemoryMiB int
	CPUs      int
	Kernel    string // path of the kernel image
	Initrd    string // path of the initramfs
	Cmdline   string
	Disk      string // disk image, attached as virtio-blk
	// DiskFormat is the disk image's QEMU format: "raw" (the default) or
	// "qcow2", "vmdk", "vpc" for the images ingot build writes for other
	// hypervisors.
	DiskFormat string
	// DiskBus is how the disk is attached: "virtio-blk" (the default),
	// "virtio-scsi" (Proxmox's default controller, GCE) or "nvme" (AWS
	// Nitro, GCE), so tests can boot an image the way other hypervisors
	// present it.
	DiskBus string
	// Firmware, when set, boots the disk through UEFI firmware (which
	// starts the image's own boot loader) instead of Kernel, Initrd and
	// Cmdline; see UEFI.
	Firmware *Firmware
	Forwards []Forward
	// VhostUserVsock, when set, is the vhost-user socket of a vsock backend
	// (hypervisor/vhostuser) and adds vhost-user-vsock-pci.
	VhostUserVsock string
	// KernelVsockCID, when non-zero, adds vhost-vsock-pci (host kernel
	// vhost_vsock) with this guest CID instead.
	KernelVsockCID uint32
	// Console receives the guest's serial console.
	Console io.Writer
	// Stderr receives QEMU's own messages; nil sends them to Console. A
	// caller that counts what the guest printed keeps the two apart.
	Stderr io.Writer
	// RunDir holds QEMU's control socket; it must exist.
	RunDir string
	// Board, when set, boots one of QEMU's models of a real board instead
	// of the virtual machine of Arch; BoardRaspi3b is the one known.
	Board string
	// DTB is the device tree the kernel gets, for a board whose firmware
	// QEMU does not emulate.
	DTB string
	// RTCStart, when set, is the time the guest's real-time clock starts
	// at (-rtc base=), instead of the host's time: a test of a guest that
	// boots with a wrong clock. Its time zone is ignored (UTC).
	RTCStart time.Time
	// ResetOnReboot keeps QEMU running when the guest reboots, as a real
	// machine resets, for a caller that starts QEMU itself (Command). Run
	// needs QEMU to end instead, to let the boot loader choose again.
	ResetOnReboot bool
}

// Firmware is UEFI firmware as two flash devices: the code, read-only
// and shared, and the variable store, which the guest writes and so must
// be a private copy per VM (UEFI makes one).
type Firmware struct {
	Code string
	Vars string
}

// uefiFirmware lists Debian's UEFI builds for QEMU: package ovmf for
// amd64 (the 4 MiB variant without Secure Boot enforcement) and
// qemu-efi-aarch64 for arm64. scripts/setup.sh installs both.
var uefiFirmware = map[string]Firmware{
	"amd64": {Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", Vars: "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	"arm64": {Code: "/usr/share/AAVMF/AAVMF_CODE.fd", Vars: "/usr/share/AAVMF/AAVMF_VARS.fd"},
}

// UEFI returns the UEFI firmware for arch with a private copy of its
// empty variable store in dir (dir/efivars.fd, made if missing, so the
// firmware's NVRAM lives as long as dir: one VM's boots share it).
func UEFI(arch, dir string) (*Firmware, error) {
	fw, ok := uefiFirmware[arch]
	if !ok {
		return nil, fmt.Errorf("qemu: no UEFI firmware known for arch %q", arch)
	}
	if _, err := os.Stat(fw.Code); err != nil {
		return nil, fmt.Errorf("qemu: UEFI firmware for %s: %w (install Debian's %s: scripts/setup.sh)", arch, err, map[string]string{"amd64": "ovmf", "arm64": "qemu-efi-aarch64"}[arch])
	}
	vars := filepath.Join(dir, "efivars.fd")
	if _, err := os.Stat(vars); err == nil {
		return &Firmware{Code: fw.Code, Vars: vars}, nil
	}
	b, err := os.ReadFile(fw.Vars)
	if err != nil {
		return nil, fmt.Errorf("qemu: UEFI variable store: %w", err)
	}
	if err := os.WriteFile(vars, b, 0o600); err != nil {
		return nil, fmt.Errorf("qemu: UEFI variable store: %w", err)
	}
	return &Firmware{Code: fw.Code, Vars: vars}, nil
}

// BoardRaspi3b is QEMU's Raspberry Pi 3B: its RAM is fixed at 1 GiB, the
// image is its SD card, and the console is the mini UART, QEMU's second
// serial port. It has no network QEMU can forward to.
const BoardRaspi3b = "raspi3b"

func (m *Machine) binary() (string, error) {
	switch m.Arch {
	case "amd64":
		return "qemu-system-x86_64", nil
	case "arm64":
		return "qemu-system-aarch64", nil
	}
	return "", fmt.Errorf("qemu: no QEMU system emulator known for arch %q", m.Arch)
}

func (m *Machine) qmpPath() string { return filepath.Join(m.RunDir, "qmp.sock") }

// Args returns QEMU's arguments for accelerator a.
func (m *Machine) Args(a Accel) ([]string, error) {
	if a == AccelAuto {
		return nil, fmt.Errorf("qemu: resolve the accelerator before building arguments")
	}
	switch m.Board {
	case "":
	case BoardRaspi3b:
		return m.raspi3bArgs(a)
	default:
		return nil, fmt.Errorf("qemu: unknown board %q", m.Board)
	}
	mem := m.MemoryMiB
	if mem <= 0 {
		mem = 512
	}
	cpus := m.CPUs
	if cpus <= 0 {
		cpus = 1
	}
	// A shared memfd backs guest RAM so a vhost-user backend can map it.
	args := append(m.commonArgs(a), "-nodefaults", "-serial", "stdio",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", mem))
	switch m.Arch {
	case "amd64":
		args = append(args, "-machine", "q35,memory-backend=mem")
		if a == AccelKVM {
			args = append(args, "-cpu", "host")
		}
	case "arm64":
		args = append(args, "-machine", "virt,memory-backend=mem")
		if a == AccelKVM {
			args = append(args, "-cpu", "host")
		} else {
			args = append(args, "-cpu", "max")
		}
	default:
		return nil, fmt.Errorf("qemu: unsupported arch %q", m.Arch)
	}
	if m.Firmware != nil {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+m.Firmware.Code,
			"-drive", "if=pflash,format=raw,unit=1,file="+m.Firmware.Vars)
	} else {
		args = append(args, m.bootArgs()...)
	}
	if !m.RTCStart.IsZero() {
		args = append(args, "-rtc", "base="+m.RTCStart.UTC().Format("2006-01-02T15:04:05"))
	}
	if m.Disk != "" {
		format, err := m.diskFormat()
		if err != nil {
			return nil, err
		}
		args = append(args, "-drive", "file="+m.Disk+",format="+format+",if=none,id=disk0,cache=writeback,discard=unmap")
		switch m.DiskBus {
		case "", "virtio-blk":
			args = append(args, "-device", "virtio-blk-pci,drive=disk0")
		case "virtio-scsi":
			args = append(args, "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=disk0,bus=scsi0.0")
		case "nvme":
			args = append(args, "-device", "nvme,drive=disk0,serial=ingot0")
		default:
			return nil, fmt.Errorf("qemu: disk bus %q: want virtio-blk, virtio-scsi or nvme", m.DiskBus)
		}
	}
	netdev := "user,id=net0"
	for _, f := range m.Forwards {
		netdev += "," + f.hostfwd()
	}
	args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0")
	args = append(args, "-device", "virtio-rng-pci")
	switch {
	case m.VhostUserVsock != "":
		args = append(args, "-chardev", "socket,id=vsock0,path="+m.VhostUserVsock,
			"-device", "vhost-user-vsock-pci,chardev=vsock0")
	case m.KernelVsockCID != 0:
		args = append(args, "-device", fmt.Sprintf("vhost-vsock-pci,guest-cid=%d", m.KernelVsockCID))
	}
	return args, nil
}

// commonArgs are the arguments of every machine: no user configuration,
// no display or monitor, QMP in RunDir, and accelerator a.
func (m *Machine) commonArgs(a Accel) []string {
	args := []string{"-no-user-config", "-display", "none", "-monitor", "none",
		"-qmp", "unix:" + m.qmpPath() + ",server=on,wait=off", "-accel", string(a)}
	if !m.ResetOnReboot {
		args = append(args, "-no-reboot")
	}
	return args
}

// bootArgs load the kernel, its command line, initramfs and device tree.
func (m *Machine) bootArgs() []string {
	args := []string{"-kernel", m.Kernel, "-append", m.Cmdline}
	if m.Initrd != "" {
		args = append(args, "-initrd", m.Initrd)
	}
	if m.DTB != "" {
		args = append(args, "-dtb", m.DTB)
	}
	return args
}

// diskFormat is the format= of the disk's -drive.
func (m *Machine) diskFormat() (string, error) {
	switch m.DiskFormat {
	case "":
		return "raw", nil
	case "raw", "qcow2", "vmdk", "vpc", "vhdx":
		return m.DiskFormat, nil
	}
	return "", fmt.Errorf("qemu: disk format %q: want raw, qcow2, vmdk, vpc or vhdx", m.DiskFormat)
}

func (m *Machine) raspi3bArgs(a Accel) ([]string, error) {
	if m.Arch != "arm64" {
		return nil, fmt.Errorf("qemu: board %s is arm64, not %q", m.Board, m.Arch)
	}
	args := append(m.commonArgs(a), "-machine", BoardRaspi3b, "-serial", "null", "-serial", "stdio")
	args = append(args, m.bootArgs()...)
	if m.Disk != "" {
		format, err := m.diskFormat()
		if err != nil {
			return nil, err
		}
		args = append(args, "-drive", "file="+m.Disk+",if=sd,format="+format)
	}
	return args, nil
}

// Command returns the QEMU process that boots m with accelerator a, for a
// caller that runs it itself: the console comes on its stdout, which the
// caller connects. QEMU gets its own process group, so that a terminal's
// Ctrl-C reaches the caller, which shuts the guest down properly, instead
// of killing QEMU mid-write; and it dies with the caller.
func (m *Machine) Command(a Accel) (*exec.Cmd, error) {
	bin, err := m.binary()
	if err != nil {
		return nil, err
	}
	args, err := m.Args(a)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// PowerButton presses the ACPI power button of the guest m runs, through
// QEMU's control socket, for a caller that started QEMU with Command.
func (m *Machine) PowerButton(ctx context.Context) error {
	qmp, err := dialQMP(ctx, m.qmpPath())
	if err != nil {
		return err
	}
	defer qmp.Close()
	_, err = qmp.execute(ctx, "system_powerdown")
	return err
}

// Exit says why a guest stopped.
type Exit int

// The ways a run can end.
const (
	ExitPoweroff Exit = iota + 1 // the guest powered off
	ExitReboot                   // the guest asked for a reset
	ExitPanic                    // the guest kernel panicked
	ExitStopped                  // the host stopped the VM (context canceled)
)

func (e Exit) String() string {
	switch e {
	case ExitPoweroff:
		return "poweroff"
	case ExitReboot:
		return "reboot"
	case ExitPanic:
		return "panic"
	case ExitStopped:
		return "stopped"
	}
	return fmt.Sprintf("exit(%d)", int(e))
}

// powerdownGrace is how long a canceled run waits for the guest to shut
// down after the ACPI power button before QEMU is killed.
const powerdownGrace = 15 * time.Second

// noOutputTimeout is how long a KVM boot may stay silent on the console
// before ingot decides KVM does not really work here and falls back to TCG.
const noOutputTimeout = 20 * time.Second

// errSilent marks a boot whose console stayed silent.
var errSilent = errors.New("guest printed nothing")

// Run boots m with accelerator a and waits until the guest stops. With
// AccelAuto it boots with KVM when the host offers it and, if that boot
// fails or prints nothing in time, boots again with TCG; logf reports the
// choice. When ctx is canceled, the guest gets the ACPI power button and
// some time to shut down before QEMU is killed.
func Run(ctx context.Context, m *Machine, a Accel, logf func(format string, args ...any)) (Exit, Accel, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if a != AccelAuto {
		exit, err := runOnce(ctx, m, a, 0)
		return exit, a, err
	}
	chosen, why := Resolve(ctx, a, m.Arch)
	if chosen == AccelTCG {
		logf("accel: tcg (%s)", why)
		exit, err := runOnce(ctx, m, AccelTCG, 0)
		return exit, AccelTCG, err
	}
	logf("accel: trying kvm (%s)", why)
	exit, err := runOnce(ctx, m, AccelKVM, noOutputTimeout)
	if err == nil || ctx.Err() != nil {
		return exit, AccelKVM, err
	}
	logf("accel: kvm failed (%v); falling back to tcg", err)
	exit, err = runOnce(ctx, m, AccelTCG, 0)
	return exit, AccelTCG, err
}

// firstByteWriter forwards writes and closes seen on the first byte.
type firstByteWriter struct {
	w    io.Writer
	once sync.Once
	seen chan struct{}
}

func (f *firstByteWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.once.Do(func() { close(f.seen) })
	}
	if f.w == nil {
		return len(p), nil
	}
	return f.w.Write(p)
}

func runOnce(ctx context.Context, m *Machine, a Accel, silentLimit time.Duration) (Exit, error) {
	cmd, err := m.Command(a)
	if err != nil {
		return 0, err
	}
	bin := cmd.Args[0]
	_ = os.Remove(m.qmpPath())
	console := &firstByteWriter{w: m.Console, seen: make(chan struct{})}
	var stderr strings.Builder
	cmd.Stdout = console
	qemuOut := m.Stderr
	if qemuOut == nil {
		qemuOut = consoleOrDiscard(m.Console)
	}
	cmd.Stderr = io.MultiWriter(&stderr, qemuOut)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("qemu: start %s: %w", bin, err)
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()

	qctx, cancelQMP := context.WithTimeout(ctx, 10*time.Second)
	qmp, qerr := dialQMP(qctx, m.qmpPath())
	cancelQMP()
	if qmp != nil {
		defer qmp.Close()
	}

	var silent <-chan time.Time
	if silentLimit > 0 {
		t := time.NewTimer(silentLimit)
		defer t.Stop()
		silent = t.C
	}
	stopped := false
	var killAfter <-chan time.Time
	for {
		select {
		case werr := <-waitc:
			if qmp != nil {
				select {
				case <-qmp.closed:
				case <-time.After(time.Second):
				}
			}
			if stopped {
				return ExitStopped, nil
			}
			if werr != nil {
				return 0, fmt.Errorf("qemu: %s: %v: %s", bin, werr, strings.TrimSpace(stderr.String()))
			}
			if qmp == nil {
				return 0, fmt.Errorf("qemu: exited without a control connection: %v", qerr)
			}
			switch reason := qmp.shutdownReason(); reason {
			case "guest-shutdown":
				return ExitPoweroff, nil
			case "guest-reset":
				return ExitReboot, nil
			case "guest-panic":
				return ExitPanic, nil
			default:
				return ExitPoweroff, fmt.Errorf("qemu: stopped for an unexpected reason %q", reason)
			}
		case <-console.seen:
			console.seen = nil
			silent = nil
		case <-silent:
			_ = cmd.Process.Kill()
			<-waitc
			return 0, fmt.Errorf("%w within %v with accel %s", errSilent, silentLimit, a)
		case <-ctx.Done():
			if stopped {
				continue
			}
			stopped = true
			ctx = context.Background()
			silent = nil
			if qmp != nil && pressPowerButton(qmp) == nil {
				killAfter = time.After(powerdownGrace)
			} else {
				_ = cmd.Process.Kill()
			}
		case <-killAfter:
			_ = cmd.Process.Kill()
		}
	}
}

// pressPowerButton asks the guest to shut down through ACPI.
func pressPowerButton(qmp *qmpConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := qmp.execute(ctx, "system_powerdown")
	return err
}

func consoleOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
