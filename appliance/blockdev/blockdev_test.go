package blockdev

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/packer/format/gpt"
)

const diskBytes = 4 << 20

// fakeMachine lays out a sysfs and /dev with the given disks; each disk
// with partitions gets a real GPT image as its device node.
type fakeMachine struct {
	sys, dev string
}

func newFakeMachine(t *testing.T) *fakeMachine {
	t.Helper()
	root := t.TempDir()
	m := &fakeMachine{sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev")}
	for _, d := range []string{filepath.Join(m.sys, "class", "block"), m.dev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// addDisk adds a whole disk with a GPT of parts (nil: no GPT) and, when
// withNodes, the partition devices.
func (m *fakeMachine) addDisk(t *testing.T, name, partPrefix string, parts []gpt.Partition, withNodes bool) {
	t.Helper()
	write(t, filepath.Join(m.sys, "class", "block", name, "size"), strconv.Itoa(diskBytes/512)+"\n")
	f, err := os.Create(filepath.Join(m.dev, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(diskBytes); err != nil {
		t.Fatal(err)
	}
	if parts == nil {
		return
	}
	if err := gpt.Write(f, diskBytes, gpt.Table{DiskGUID: gpt.GUIDFromName("test", name), Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	if withNodes {
		for i := range parts {
			m.addPartitionNode(t, name, partPrefix, i+1)
		}
	}
}

func (m *fakeMachine) addPartitionNode(t *testing.T, disk, partPrefix string, n int) {
	t.Helper()
	pname := disk + partPrefix + strconv.Itoa(n)
	write(t, filepath.Join(m.sys, "class", "block", disk, pname, "partition"), strconv.Itoa(n)+"\n")
	write(t, filepath.Join(m.sys, "class", "block", pname, "partition"), strconv.Itoa(n)+"\n")
	write(t, filepath.Join(m.dev, pname), "")
}

func parts(names ...string) []gpt.Partition {
	var ps []gpt.Partition
	lba := uint64(2048)
	for _, n := range names {
		ps = append(ps, gpt.Partition{Name: n, Type: gpt.TypeLinuxFilesystem, GUID: gpt.GUIDFromName("part", n),
			FirstLBA: lba, LastLBA: lba + 1023})
		lba += 1024
	}
	return ps
}

func TestFind(t *testing.T) {
	m := newFakeMachine(t)
	m.addDisk(t, "loop0", "p", parts("loopy"), true) // ignored: loop devices are never read
	m.addDisk(t, "vda", "", nil, false)              // no GPT
	m.addDisk(t, "vdb", "", parts("boot", "root-a", "root-b", "perm"), true)
	m.addDisk(t, "nvme0n1", "p", parts("data"), true)
	f := New(WithSysDir(m.sys), WithDevDir(m.dev))
	for _, tc := range []struct {
		part      string
		dev, disk string
		number    int
	}{
		{"root-b", "vdb3", "vdb", 3},
		{"perm", "vdb4", "vdb", 4},
		{"data", "nvme0n1p1", "nvme0n1", 1},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := f.Find(ctx, gpt.GUIDFromName("part", tc.part))
		cancel()
		want := Partition{Device: filepath.Join(m.dev, tc.dev), Disk: filepath.Join(m.dev, tc.disk), Number: tc.number, Name: tc.part}
		if err != nil || got != want {
			t.Errorf("Find(%s) = %+v, %v, want %+v", tc.part, got, err, want)
		}
	}
}

func TestFindWaitsForPartitionNode(t *testing.T) {
	m := newFakeMachine(t)
	m.addDisk(t, "vda", "", parts("boot", "root-a"), false)
	f := New(WithSysDir(m.sys), WithDevDir(m.dev), WithPollInterval(5*time.Millisecond))
	go func() {
		time.Sleep(50 * time.Millisecond)
		m.addPartitionNode(t, "vda", "", 2)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := f.Find(ctx, gpt.GUIDFromName("part", "root-a"))
	if err != nil || got.Device != filepath.Join(m.dev, "vda2") {
		t.Errorf("Find(root-a) = %+v, %v, want /dev/vda2 once it appears", got, err)
	}
}

// TestFindBeforeScan: the hook runs before each look, so a disk whose
// driver it loads is found on the next one.
func TestFindBeforeScan(t *testing.T) {
	m := newFakeMachine(t)
	calls := 0
	f := New(WithSysDir(m.sys), WithDevDir(m.dev), WithPollInterval(time.Millisecond), WithBeforeScan(func() {
		calls++
		if calls == 3 {
			m.addDisk(t, "sda", "", parts("boot", "root-a"), true)
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := f.Find(ctx, gpt.GUIDFromName("part", "root-a"))
	if err != nil || got.Device != filepath.Join(m.dev, "sda2") || calls != 3 {
		t.Errorf("Find(root-a) = %+v, %v after %d hook calls, want /dev/sda2 after 3", got, err, calls)
	}
}

func TestFindTimeout(t *testing.T) {
	m := newFakeMachine(t)
	m.addDisk(t, "vda", "", parts("boot"), true)
	f := New(WithSysDir(m.sys), WithDevDir(m.dev), WithPollInterval(5*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	g := gpt.GUIDFromName("part", "missing")
	_, err := f.Find(ctx, g)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), g.String()) || !strings.Contains(err.Error(), "without it: vda") {
		t.Errorf("Find(missing) = %v, want ErrNotFound naming the GUID and vda", err)
	}
}
