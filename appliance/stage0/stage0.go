// Package stage0 is ingot-init's first life, as PID 1 in the initramfs: it
// mounts /proc, /sys and /dev, loads the kernel modules the initramfs
// carries (in the order /etc/ingot/stage0.json gives; the drivers of other
// clouds only for the devices present, see kmod.OnDemand), finds the root slot
// by the GPT partition GUID in ingot.root=PARTUUID=..., mounts its squashfs
// read-only, nosuid and nodev, switches root to it and executes its /init
// (stage1) in place.
//
// Any failure is fatal: stage0 prints what went wrong on the console and
// powers the machine off, because there is nothing to fall back to and a
// returning PID 1 would panic the kernel.
package stage0

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ingotdev/ingot/appliance/kmod"

	"golang.org/x/sys/unix"

	"github.com/ingotdev/ingot/appliance/blockdev"
	"github.com/ingotdev/ingot/appliance/cmdline"
	"github.com/ingotdev/ingot/appliance/internal/sysmount"
	"github.com/ingotdev/ingot/packer/format/spec"
)

const (
	// newRoot is where the root slot is mounted before the switch; the
	// initramfs has the directory.
	newRoot = "/newroot"
	// initPath is the program executed in the new root.
	initPath = "/init"
	// rootWait bounds the wait for the root disk to appear after the
	// drivers load; virtio disks take milliseconds, USB disks seconds.
	rootWait = 10 * time.Second
	// onDemandGrace is how long after stage0 starts the drivers loaded
	// on demand wait for their devices: if the root disk has not
	// appeared by then, stage0 loads all of them, in case the disk's
	// driver matches no device alias (a module loads in milliseconds).
	onDemandGrace = 2 * time.Second
	// fatalDelay leaves the message on screen before the power goes off.
	fatalDelay = 5 * time.Second
)

// Main runs stage0. It never returns: it executes stage1 or powers off.
func Main() {
	start := time.Now()
	log := logger{w: os.Stderr}
	err := run(log, start)
	// run returns only on failure: on success it has replaced this program.
	fatal(log, err)
}

type logger struct{ w io.Writer }

func (l logger) Printf(format string, args ...any) {
	fmt.Fprintf(l.w, "ingot stage0: "+format+"\n", args...)
}

func run(log logger, start time.Time) error {
	for _, m := range []sysmount.Mount{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Mkdir: true},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Mkdir: true},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755", Mkdir: true},
	} {
		if _, err := sysmount.Do(m); err != nil {
			return err
		}
	}
	cfg, err := spec.LoadStage0(spec.Stage0Path)
	if err != nil {
		return err
	}
	params, err := cmdline.Read()
	if err != nil {
		// A bad ingot.ip must not stop the boot; stage1 reports it too.
		log.Printf("warning: %v", err)
	}
	if params.Root.IsZero() {
		b, _ := os.ReadFile(cmdline.ProcPath)
		return fmt.Errorf("no ingot.root=PARTUUID=<guid> on the kernel command line %q", strings.TrimSpace(string(b)))
	}
	modErrs := loadModules(log, alwaysLoaded(cfg))
	onDemand := kmod.NewOnDemand(cfg.Modules, cfg.OnDemand)
	loadDemanded := func() {
		loaded, errs := onDemand.LoadMatching()
		if onDemand.Pending() > 0 && time.Since(start) > onDemandGrace {
			log.Printf("root not found after %s: loading the other %d on-demand drivers", onDemandGrace, onDemand.Pending())
			more, moreErrs := onDemand.LoadRest()
			loaded, errs = append(loaded, more...), append(errs, moreErrs...)
		}
		for _, l := range loaded {
			log.Printf("%s", l)
		}
		for _, err := range errs {
			log.Printf("%v", err)
		}
		modErrs = append(modErrs, errs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rootWait)
	defer cancel()
	part, err := blockdev.New(blockdev.WithBeforeScan(loadDemanded)).Find(ctx, params.Root)
	if err != nil {
		if len(modErrs) > 0 {
			err = fmt.Errorf("%w\n(modules that failed to load: %w)", err, errors.Join(modErrs...))
		}
		return fmt.Errorf("root slot: %w", err)
	}
	log.Printf("root %s is %s (partition %d %q), found after %s", params.Root, part.Device, part.Number, part.Name,
		time.Since(start).Round(time.Millisecond))
	loaded, errs := onDemand.Finish()
	if len(loaded)+len(errs) > 0 {
		log.Printf("another hypervisor's or cloud's devices called for drivers: loaded the other %d on-demand drivers too", len(loaded)+len(errs))
	}
	for _, err := range errs {
		log.Printf("%v", err)
	}
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := mountRoot(unix.Mount, part.Device); err != nil {
		return err
	}
	if err := unix.Access(newRoot+initPath, unix.X_OK); err != nil {
		return fmt.Errorf("root slot %s has no executable %s: %w", part.Device, initPath, err)
	}
	if err := switchRoot(log); err != nil {
		return err
	}
	// Same arguments and environment: the kernel passed them to stage0 and
	// stage1 reads its parameters from /proc/cmdline anyway.
	err = unix.Exec(initPath, os.Args, os.Environ())
	return fmt.Errorf("exec %s in the new root: %w", initPath, err)
}

// mountFunc has unix.Mount's signature, so tests can see the call.
type mountFunc func(source, target, fstype string, flags uintptr, data string) error

// mountRoot mounts the root slot's squashfs on newRoot with
// sysmount.RootFlags: read-only, nosuid and nodev, so the device nodes and
// setuid files of the image services it carries are inert.
func mountRoot(mount mountFunc, device string) error {
	if err := mount(device, newRoot, "squashfs", sysmount.RootFlags, ""); err != nil {
		return fmt.Errorf("mount %s (squashfs) on %s: %w", device, newRoot, err)
	}
	return nil
}

// alwaysLoaded returns the modules of cfg that every boot loads (those
// not loaded on demand), in order.
func alwaysLoaded(cfg spec.Stage0) []string {
	var out []string
	for _, m := range cfg.Modules {
		if _, ok := cfg.OnDemand[m]; !ok {
			out = append(out, m)
		}
	}
	return out
}

// loadModules loads each module in order. Failures are logged and
// returned, and loading goes on, since the root disk may still appear.
func loadModules(log logger, paths []string) []error {
	errs := kmod.LoadAll(paths)
	for _, err := range errs {
		log.Printf("%v", err)
	}
	return errs
}

// switchRoot makes newRoot the root, as switch_root(8) does: move the
// kernel filesystems under it, free the initramfs, move it onto "/" and
// chroot into it.
func switchRoot(log logger) error {
	for _, dir := range []string{"/dev", "/proc", "/sys"} {
		target := newRoot + dir
		if err := unix.Mount(dir, target, "", unix.MS_MOVE, ""); err != nil {
			if dir == "/dev" {
				// Without /dev stage1 has no console and no disks.
				return fmt.Errorf("move %s to %s: %w", dir, target, err)
			}
			// stage1 mounts /proc and /sys itself when they are missing.
			log.Printf("warning: move %s to %s: %v; detaching it", dir, target, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	}
	// The initramfs stays in memory after the switch unless its files are
	// deleted; the modules alone are megabytes.
	if err := freeInitramfs(); err != nil {
		log.Printf("warning: freeing the initramfs: %v", err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("chdir %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot %s: %w", newRoot, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir / in the new root: %w", err)
	}
	return nil
}

// ramfsMagic and tmpfsMagic identify the initramfs's filesystem (rootfs is
// one or the other); freeInitramfs refuses to delete anything else.
const (
	ramfsMagic = 0x858458f6
	tmpfsMagic = 0x01021994
)

func freeInitramfs() error {
	var fs unix.Statfs_t
	if err := unix.Statfs("/", &fs); err != nil {
		return err
	}
	if fs.Type != ramfsMagic && fs.Type != tmpfsMagic {
		return fmt.Errorf("/ is not ramfs or tmpfs (magic %#x); not deleting anything", fs.Type)
	}
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		return err
	}
	return removeContents("/", uint64(st.Dev))
}

// removeContents deletes everything under dir that is on device dev,
// without crossing into other filesystems (the new root, and anything
// mounted).
func removeContents(dir string, dev uint64) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if uint64(st.Dev) != dev {
			continue // a mount point
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := removeContents(p, dev); err != nil {
				errs = append(errs, err)
			}
			// The directory may still hold a mount point; then it stays.
			if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EBUSY) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, fmt.Errorf("unlink %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// fatal reports err and powers off. It never returns.
func fatal(log logger, err error) {
	log.Printf("FATAL: %v", err)
	log.Printf("cannot boot; powering off in %s", fatalDelay)
	time.Sleep(fatalDelay)
	unix.Sync()
	perr := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: the power-off failed. Exiting PID 1 panics the kernel,
	// which at least stops the machine (or reboots it with panic=N).
	log.Printf("power off failed: %v; exiting (the kernel will panic)", perr)
	os.Exit(1)
}
