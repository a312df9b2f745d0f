// Package blockdev finds a partition by its GPT partition GUID, as the
// kernel's root=PARTUUID= does, for init code that has no udev: it lists the
// whole disks in sysfs, reads each one's GPT with packer/gpt, and maps the
// matching entry to its device node through the partition numbers sysfs
// shows.
package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/packer/format/gpt"
)

// Partition is a partition found on a disk.
type Partition struct {
	// Device is the device node, e.g. /dev/vda2.
	Device string
	// Disk is the whole disk's device node, e.g. /dev/vda.
	Disk string
	// Number is the 1-based GPT entry number.
	Number int
	// Name is the GPT partition name.
	Name string
}

// Finder looks for partitions. The zero value is not usable; use New.
type Finder struct {
	sysDir, devDir string
	poll           time.Duration
	beforeScan     func()
}

// Option configures a Finder.
type Option func(*Finder)

// WithSysDir sets where sysfs is mounted (default /sys); tests point it at
// a fake tree.
func WithSysDir(dir string) Option { return func(f *Finder) { f.sysDir = dir } }

// WithDevDir sets where device nodes live (default /dev).
func WithDevDir(dir string) Option { return func(f *Finder) { f.devDir = dir } }

// WithPollInterval sets how often Find looks again while the partition is
// missing (default 20 ms; disks appear while drivers probe).
func WithPollInterval(d time.Duration) Option { return func(f *Finder) { f.poll = d } }

// WithBeforeScan has Find call fn before each look through the disks,
// for instance to load the drivers of devices that appeared meanwhile.
func WithBeforeScan(fn func()) Option { return func(f *Finder) { f.beforeScan = fn } }

// New returns a Finder.
func New(opts ...Option) *Finder {
	f := &Finder{sysDir: "/sys", devDir: "/dev", poll: 20 * time.Millisecond}
	for _, o := range opts {
		o(f)
	}
	return f
}

// ErrNotFound is wrapped by Find's error when no disk had the partition.
var ErrNotFound = errors.New("partition not found")

// Find returns the partition whose GPT unique GUID is g, looking again
// until it appears or ctx ends; the error then lists what was seen.
func (f *Finder) Find(ctx context.Context, g gpt.GUID) (Partition, error) {
	// A disk whose table was read without a match is not read again; a
	// disk that failed (no medium, still probing) is.
	noMatch := map[string]bool{}
	var lastErrs []error
	for {
		if f.beforeScan != nil {
			f.beforeScan()
		}
		p, found, errs := f.scan(g, noMatch)
		if found {
			return p, nil
		}
		lastErrs = errs
		t := time.NewTimer(f.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			seen := make([]string, 0, len(noMatch))
			for d := range noMatch {
				seen = append(seen, d)
			}
			sort.Strings(seen)
			err := fmt.Errorf("blockdev: PARTUUID=%s: %w (disks without it: %s)", g, ErrNotFound, strings.Join(seen, " "))
			if len(seen) == 0 {
				err = fmt.Errorf("blockdev: PARTUUID=%s: %w (no disk with a GPT appeared)", g, ErrNotFound)
			}
			return Partition{}, errors.Join(append([]error{err}, lastErrs...)...)
		case <-t.C:
		}
	}
}

// scan looks once through the whole disks in sysfs.
func (f *Finder) scan(g gpt.GUID, noMatch map[string]bool) (Partition, bool, []error) {
	classDir := filepath.Join(f.sysDir, "class", "block")
	ents, err := os.ReadDir(classDir)
	if err != nil {
		return Partition{}, false, []error{fmt.Errorf("blockdev: %w", err)}
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if noMatch[name] || ignoredDisk(name) {
			continue
		}
		devSys := filepath.Join(classDir, name)
		if _, err := os.Stat(filepath.Join(devSys, "partition")); err == nil {
			continue // a partition, not a whole disk
		}
		sectors, err := readInt(filepath.Join(devSys, "size"))
		if err != nil {
			errs = append(errs, fmt.Errorf("blockdev: %s: %w", name, err))
			continue
		}
		if sectors == 0 {
			continue // empty drive, or one still probing
		}
		tab, err := f.readTable(name, sectors*512)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		part, ok := tab.Find(g)
		if !ok {
			noMatch[name] = true
			continue
		}
		dev, err := f.partitionDevice(devSys, part.Number)
		if err != nil {
			// The table is read but the kernel has not created the
			// partition device yet; look again on the next scan.
			errs = append(errs, fmt.Errorf("blockdev: %s: partition %d: %w", name, part.Number, err))
			continue
		}
		return Partition{Device: dev, Disk: filepath.Join(f.devDir, name), Number: part.Number, Name: part.Name}, true, nil
	}
	return Partition{}, false, errs
}

// ignoredDisk skips devices that never carry an ingot disk, to avoid
// reading every loop and ram disk on a host.
func ignoredDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "dm-", "md"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (f *Finder) readTable(name string, diskBytes int64) (gpt.Table, error) {
	dev := filepath.Join(f.devDir, name)
	r, err := os.Open(dev)
	if err != nil {
		return gpt.Table{}, fmt.Errorf("blockdev: %w", err)
	}
	defer r.Close()
	t, err := gpt.Read(r, diskBytes)
	if err != nil {
		return gpt.Table{}, fmt.Errorf("blockdev: %s: %w", dev, err)
	}
	return t, nil
}

// partitionDevice finds the child of a disk's sysfs directory whose
// "partition" file holds number, and returns its device node. Names differ
// by driver (vda2, nvme0n1p2, mmcblk0p2), so they are read, not built.
func (f *Finder) partitionDevice(diskSys string, number int) (string, error) {
	ents, err := os.ReadDir(diskSys)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		n, err := readInt(filepath.Join(diskSys, e.Name(), "partition"))
		if err != nil || n != int64(number) {
			continue
		}
		dev := filepath.Join(f.devDir, e.Name())
		if _, err := os.Stat(dev); err != nil {
			return "", err
		}
		return dev, nil
	}
	return "", errors.New("no partition device in sysfs yet")
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
