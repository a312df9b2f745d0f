package pullrig

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ingotdev/ingot/appliance/pull"
	"github.com/ingotdev/ingot/appliance/update"
	"github.com/ingotdev/ingot/packer/format/image"
	"github.com/ingotdev/ingot/packer/format/slot"
)

// linkAbove: boot files larger than this are hard-linked into each
// device's boot directory rather than copied (the update path replaces
// boot files by rename, never in place).
const linkAbove = 64 << 10

// Base is what devices start from: a release's boot directory, and the
// two running roots devices share (that release's, and an empty one).
type Base struct {
	BootDir string
	// Running holds the release's root in a file of the root
	// partition's size; Empty is a sparse file of that size (a device
	// with nothing to reuse). Both are read-only.
	Running, Empty string
	// PartBytes is the size of a root partition.
	PartBytes int64
}

// PrepareBase extracts the boot files and slot a's root of image img into
// dir.
func PrepareBase(dir, img string) (*Base, error) {
	im, err := image.Open(img)
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	defer im.Close()
	b := &Base{BootDir: filepath.Join(dir, "boot"), Running: filepath.Join(dir, "root-a.release"), Empty: filepath.Join(dir, "root-a.empty")}
	bootFS, err := im.Boot()
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	if err := os.CopyFS(b.BootDir, bootFS); err != nil {
		return nil, fmt.Errorf("pullrig: boot files of %s: %w", img, err)
	}
	part, err := im.Root(slot.A)
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	b.PartBytes = part.Size()
	f, err := os.Create(b.Running)
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	_, err = io.Copy(f, root)
	if err == nil {
		err = f.Truncate(b.PartBytes)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("pullrig: %s: %w", b.Running, err)
	}
	if err := sparseFile(b.Empty, b.PartBytes); err != nil {
		return nil, err
	}
	for _, p := range []string{b.Running, b.Empty} {
		if err := os.Chmod(p, 0o444); err != nil {
			return nil, fmt.Errorf("pullrig: %w", err)
		}
	}
	return b, nil
}

func sparseFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pullrig: %s: %w", path, err)
	}
	return nil
}

// readOnlyPartition is a running slot that many devices share: reads
// only.
type readOnlyPartition struct {
	*os.File
	size int64
}

func (p readOnlyPartition) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("%s: the running slot is shared and read-only", p.Name())
}

func (p readOnlyPartition) SizeBytes() int64 { return p.size }

// DeviceConfig describes one device.
type DeviceConfig struct {
	// Dir is the device's own directory (boot directory, slot b, perm).
	Dir  string
	Base *Base
	// Running is the file of its running slot a: Base.Running or
	// Base.Empty.
	Running string
	// Keys verify releases (update.keys).
	Keys []*ecdsa.PublicKey
	// Name, Release and BuildID are what the device runs.
	Name    string
	Release uint64
	BuildID string
	// Logf receives the puller's log; nil: silent.
	Logf func(format string, args ...any)
}

// Device is one appliance's update engine.
type Device struct {
	BootDir string
	// SlotB is the file of its slot b, the one a pull writes.
	SlotB  string
	Puller *pull.Puller
}

// NewDevice makes a device in c.Dir: the base's boot directory
// (slot.json: slot a active), the running slot a, its own empty slot b,
// and the agent's update Manager and release Puller over them, pulling
// over plain HTTP with an HTTP client of its own. Its reboot does
// nothing.
func NewDevice(c DeviceConfig) (*Device, error) {
	bootDir := filepath.Join(c.Dir, "boot")
	if err := copyBootDir(c.Base.BootDir, bootDir); err != nil {
		return nil, err
	}
	slotB := filepath.Join(c.Dir, slot.B.PartitionLabel())
	if err := sparseFile(slotB, c.Base.PartBytes); err != nil {
		return nil, err
	}
	partBytes, running := c.Base.PartBytes, c.Running
	open := func(_ context.Context, n slot.Name) (update.Partition, error) {
		if n == slot.A {
			fl, err := os.Open(running)
			if err != nil {
				return nil, err
			}
			return readOnlyPartition{File: fl, size: partBytes}, nil
		}
		return update.OpenFile(slotB)
	}
	mgr, err := update.NewManager(bootDir, slot.A, open, update.WithArch(Arch))
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	p, err := pull.New(pull.Config{
		Insecure: true, Keys: c.Keys, Name: c.Name, Target: string(Target), Arch: Arch,
		Release: c.Release, BuildID: c.BuildID, StateDir: filepath.Join(c.Dir, "perm", "pull"), Slots: mgr,
		Reboot:      func(context.Context) error { return nil },
		RebootDelay: time.Millisecond, Logf: c.Logf,
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
	})
	if err != nil {
		return nil, fmt.Errorf("pullrig: %w", err)
	}
	return &Device{BootDir: bootDir, SlotB: slotB, Puller: p}, nil
}

// CheckTrial reports an error unless the device's slot.json names slot a
// active and slot b its trial: what a committed pull leaves.
func (d *Device) CheckTrial() error {
	s, err := update.ReadState(d.BootDir)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	if s.Trial != slot.B || s.Active != slot.A {
		return fmt.Errorf("pullrig: slot.json %+v after the pull, want active a and trial b", s)
	}
	return nil
}

// CheckSlotB reports an error unless the device's slot b begins with
// exactly the root of slot a of image img.
func (d *Device) CheckSlotB(img string) error {
	im, err := image.Open(img)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	defer im.Close()
	root, err := im.RootSquashfs(slot.A)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	want, err := digest(root)
	if err != nil {
		return fmt.Errorf("pullrig: root of %s: %w", img, err)
	}
	f, err := os.Open(d.SlotB)
	if err != nil {
		return fmt.Errorf("pullrig: %w", err)
	}
	defer f.Close()
	got, err := digest(io.NewSectionReader(f, 0, root.Size()))
	if err != nil {
		return fmt.Errorf("pullrig: %s: %w", d.SlotB, err)
	}
	if got != want {
		return fmt.Errorf("pullrig: %s: the first %d bytes have digest sha256:%s, the root of %s sha256:%s", d.SlotB, root.Size(), got, img, want)
	}
	return nil
}

func digest(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyBootDir copies the boot directory src to dst, hard-linking files
// larger than linkAbove.
func copyBootDir(src, dst string) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > linkAbove {
			return os.Link(path, to)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		return fmt.Errorf("pullrig: boot directory %s: %w", dst, err)
	}
	return nil
}
