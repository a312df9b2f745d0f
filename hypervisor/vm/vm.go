// Package vm runs an appliance image as a VM for as long as the appliance
// lives: it boots the image through the host-side boot loader, starts the
// vsock backend, and boots again when the guest reboots (the loader applies
// the A/B trial and rollback rules each time), until the guest powers off
// or the caller stops it.
package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vhostuser"
	"github.com/ingotdev/ingot/packer/format/bls"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/layout"
)

// Vsock selects the vsock transport of the VM.
type Vsock string

// Vsock transports.
const (
	// VsockUser is the built-in vhost-user backend; the host side is the
	// hybrid-vsock Unix socket VsockPath.
	VsockUser Vsock = "user"
	// VsockKernel uses the host kernel's vhost_vsock (AF_VSOCK on the host).
	VsockKernel Vsock = "kernel"
	// VsockNone gives the VM no vsock device.
	VsockNone Vsock = "none"
)

// GuestCID is the CID of a VM on the user-space backend. Each VM has its
// own backend, so every VM can use the same number.
const GuestCID = 3

// Config describes a VM.
type Config struct {
	Image     string // disk image from ingot build
	RunDir    string // sockets and extracted boot files; created if missing
	Accel     qemu.Accel
	MemoryMiB int
	CPUs      int
	Forwards  []qemu.Forward
	Vsock     Vsock
	// KernelCID is the guest CID with VsockKernel.
	KernelCID uint32
	// Console receives the serial console; nil discards it.
	Console io.Writer
	// Logf reports boots, accelerator choices and exits; nil is quiet.
	Logf func(format string, args ...any)
	// OnBoot, when set, is called before each boot with what the loader
	// decided.
	OnBoot func(*bootloader.Boot)
	// NoStaticNetwork leaves ingot.ip= off the kernel command line, so the
	// appliance configures its network as on real hardware (by DHCP, from
	// QEMU's built-in server, unless its config says otherwise).
	NoStaticNetwork bool
	// RTCStart, when set, is where the guest's real-time clock starts on
	// every boot (qemu.Machine.RTCStart).
	RTCStart time.Time
	// Firmware is how the guest boots: FirmwareDirect ("", the default)
	// has ingot's host-side loader pick the slot and QEMU boot its kernel
	// directly; FirmwareUEFI boots the image through UEFI firmware and
	// its own systemd-boot, as any hypervisor would, with a private
	// variable store in RunDir.
	Firmware string
}

// Boot paths of Config.Firmware.
const (
	FirmwareDirect = "direct"
	FirmwareUEFI   = "uefi"
)

// VsockPath is the hybrid-vsock socket of a VM run with VsockUser in
// runDir: connect, write "CONNECT <port>\n", read "OK <n>\n".
func VsockPath(runDir string) string { return filepath.Join(runDir, "vsock.sock") }

// backendStopTimeout bounds how long Run waits, when it returns, for the
// vsock backend to close its sockets.
const backendStopTimeout = 10 * time.Second

// Run boots the image and keeps it running across guest reboots. It
// returns nil when the guest powers off or ctx is canceled (after a clean
// ACPI shutdown where the guest allows one).
func Run(ctx context.Context, c Config) error {
	logf := c.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if c.Vsock == "" {
		c.Vsock = VsockUser
	}
	if c.Accel == "" {
		c.Accel = qemu.AccelAuto
	}
	image, err := filepath.Abs(c.Image)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	if _, err := os.Stat(image); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	if err := os.MkdirAll(c.RunDir, 0o700); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	// The console is counted apart from QEMU's own messages: a boot whose
	// kernel printed nothing is a sign of a boot loop (checkBootLoop).
	console := &countingWriter{w: c.Console}
	qemuOut := c.Console
	if qemuOut == nil {
		qemuOut = io.Discard
	}
	m := &qemu.Machine{
		MemoryMiB: c.MemoryMiB, CPUs: c.CPUs, Disk: image, Forwards: c.Forwards,
		Console: console, Stderr: qemuOut, RunDir: c.RunDir, RTCStart: c.RTCStart,
	}
	// The backend outlives each QEMU: it must keep answering while the guest
	// shuts down after ctx is canceled, and it serves the next QEMU after a
	// reboot.
	backendCtx, stopBackend := context.WithCancel(context.WithoutCancel(ctx))
	backendErr := make(chan error, 1)
	// backendDone is closed once the backend has closed its listeners,
	// which unlinks their sockets. Run waits for it: a Run started next on
	// the same RunDir (a restart after a power cut) binds the same paths,
	// and a late Close of this Run's listeners would unlink those.
	var backendDone chan struct{} // nil: no backend
	defer func() {
		stopBackend()
		if backendDone == nil {
			return
		}
		select {
		case <-backendDone:
		case <-time.After(backendStopTimeout):
			logf("vsock backend still stopping after %v", backendStopTimeout)
		}
	}()
	switch c.Vsock {
	case VsockUser:
		dev, err := vhostuser.NewDevice(GuestCID, VsockPath(c.RunDir))
		if err != nil {
			return fmt.Errorf("vm: vsock: %w", err)
		}
		vhost := filepath.Join(c.RunDir, "vhost-user.sock")
		_ = os.Remove(vhost)
		// Bound before QEMU starts: QEMU gives up if the socket is not
		// there when it connects.
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: vhost, Net: "unix"})
		if err != nil {
			return fmt.Errorf("vm: vsock: %w", err)
		}
		m.VhostUserVsock = vhost
		backendDone = make(chan struct{})
		go func() {
			backendErr <- dev.ServeListener(backendCtx, l)
			close(backendDone)
		}()
	case VsockKernel:
		if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
			return fmt.Errorf("vm: vsock kernel: %w (load the vhost_vsock module, or use the user backend)", err)
		}
		m.KernelVsockCID = c.KernelCID
	case VsockNone:
	default:
		return fmt.Errorf("vm: vsock %q: want user, kernel or none", c.Vsock)
	}

	switch c.Firmware {
	case "", FirmwareDirect:
	case FirmwareUEFI:
		info, err := uefiImage(image)
		if err != nil {
			return err
		}
		if m.Firmware, err = qemu.UEFI(info.Arch, c.RunDir); err != nil {
			return fmt.Errorf("vm: %w", err)
		}
		m.Arch = info.Arch
	default:
		return fmt.Errorf("vm: firmware %q: want %s or %s", c.Firmware, FirmwareDirect, FirmwareUEFI)
	}

	accel := c.Accel
	var history []bootRecord
	for boots := 1; ; boots++ {
		b := &bootloader.Boot{}
		if m.Firmware != nil {
			// The guest's firmware and systemd-boot pick the slot from
			// the image's boot entries; stage1 makes slot.json agree.
			logf("boot %d: UEFI firmware %s, variables %s", boots, m.Firmware.Code, m.Firmware.Vars)
		} else {
			var extra []string
			if !c.NoStaticNetwork {
				extra = append(extra, layout.ParamIP+"="+qemu.GuestNetwork)
			}
			b, err = bootloader.Prepare(image, c.RunDir, extra...)
			if err != nil {
				return err
			}
			if c.OnBoot != nil {
				c.OnBoot(b)
			}
			m.Arch, m.Kernel, m.Initrd, m.Cmdline = b.Info.Arch, b.Kernel, b.Initrd, b.Cmdline
			trial := ""
			if b.Trial {
				trial = fmt.Sprintf(" (trial, %d tries left after this one)", b.State.TriesLeft)
			}
			if b.Recovered != "" {
				logf("boot %d: %s", boots, b.Recovered)
			}
			logf("boot %d: %s build %s, slot %s%s", boots, b.Info.Name, shortID(b.BuildID), b.Slot, trial)
		}
		console.n.Store(0)
		start := time.Now()
		exit, used, err := qemu.Run(ctx, m, accel, logf)
		if err != nil {
			return err
		}
		history = append(history, bootRecord{Exit: exit, Trial: b.Trial, ConsoleBytes: console.n.Load(), Lasted: time.Since(start)})
		if len(history) > bootHistoryMax {
			history = history[1:]
		}
		accel = used // the probe's verdict holds for the next boots
		select {
		case err := <-backendErr:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("vm: vsock backend stopped: %w", err)
			}
		default:
		}
		switch exit {
		case qemu.ExitReboot, qemu.ExitPanic:
			if err := checkBootLoop(history, c.MemoryMiB); err != nil {
				return err
			}
			logf("guest %s; booting again", exit)
		case qemu.ExitStopped:
			logf("stopped")
			return nil
		default:
			logf("guest powered off")
			return nil
		}
	}
}

// uefiImage reads the image info of an image that boots through UEFI,
// and fails naming the image when it has no UEFI loader (built before
// the UEFI path, or a Raspberry Pi image).
func uefiImage(path string) (layout.Info, error) {
	im, err := image.Open(path)
	if err != nil {
		return layout.Info{}, fmt.Errorf("vm: %w", err)
	}
	defer im.Close()
	fsys, err := im.Boot()
	if err != nil {
		return layout.Info{}, fmt.Errorf("vm: %w", err)
	}
	var info layout.Info
	b, err := fsys.ReadFile(layout.InfoFile)
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err != nil {
		return layout.Info{}, fmt.Errorf("vm: %s: %s: %w", path, layout.InfoFile, err)
	}
	loader, err := bls.RemovablePath(info.Arch)
	if err != nil {
		return layout.Info{}, fmt.Errorf("vm: %s: %w", path, err)
	}
	if _, err := fs.Stat(fsys, loader); err != nil {
		return layout.Info{}, fmt.Errorf("vm: %s has no UEFI loader (%s): build it again with this ingot, or boot it without -firmware uefi", path, loader)
	}
	return info, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// countingWriter forwards writes to w (nil discards them) and counts the
// bytes.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	if c.w == nil {
		return len(p), nil
	}
	return c.w.Write(p)
}
