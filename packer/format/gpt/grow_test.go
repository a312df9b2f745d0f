package gpt

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// cutDisk is a Device in memory. With cut >= 0 it loses power at its
// cut-th write: that write reaches the disk only for its first sector
// (a torn multi-sector write), and nothing after it does.
type cutDisk struct {
	b      []byte
	writes int
	cut    int
	syncs  int
}

func (m *cutDisk) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.b[off:]), nil }

func (m *cutDisk) WriteAt(p []byte, off int64) (int, error) {
	n := m.writes
	m.writes++
	switch {
	case m.cut < 0 || n < m.cut:
		copy(m.b[off:], p)
	case n == m.cut:
		copy(m.b[off:], p[:min(len(p), SectorBytes)])
	}
	return len(p), nil
}

func (m *cutDisk) Sync() error { m.syncs++; return nil }

const growMiB = 1 << 20

// smallDisk is an ingot-like disk of 8 MiB (boot, root, perm), grown to
// grownBytes with zeros, as qemu-img resize leaves it.
func smallDisk(t *testing.T, grownBytes int64) (*cutDisk, Table) {
	t.Helper()
	const diskBytes = 8 * growMiB
	ext, err := Layout(diskBytes, 1*growMiB, 2*growMiB, 3*growMiB)
	if err != nil {
		t.Fatal(err)
	}
	tab := Table{DiskGUID: GUIDFromName("test/disk", "grow")}
	for i, name := range []string{"boot", "root", "perm"} {
		tab.Partitions = append(tab.Partitions, Partition{Name: name, Type: TypeLinuxFilesystem, GUID: GUIDFromName("test/part", name), FirstLBA: ext[i].FirstLBA, LastLBA: ext[i].LastLBA})
	}
	m := &cutDisk{b: make([]byte, diskBytes), cut: -1}
	if err := Write(m, diskBytes, tab); err != nil {
		t.Fatal(err)
	}
	m.b = append(m.b, make([]byte, grownBytes-diskBytes)...)
	m.writes = 0
	return m, tab
}

// sfdiskView is what sfdisk, the independent reader, sees.
type sfdiskView struct {
	PartitionTable struct {
		LastLBA    uint64 `json:"lastlba"`
		Partitions []struct {
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdisk(t *testing.T, b []byte) sfdiskView {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sfdisk", "--json", p).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	var v sfdiskView
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	if out, err := exec.Command("sfdisk", "--verify", p).CombinedOutput(); err != nil {
		t.Fatalf("sfdisk --verify: %v\n%s", err, out)
	}
	return v
}

func TestGrow(t *testing.T) {
	const grown = 64 * growMiB
	m, tab := smallDisk(t, grown)
	p, changed, err := Grow(m, grown, 3)
	if err != nil || !changed {
		t.Fatalf("Grow = %v, %v", changed, err)
	}
	wantLast := uint64(grown/SectorBytes) - 1 - backupSectors
	if p.LastLBA != wantLast || p.FirstLBA != tab.Partitions[2].FirstLBA || p.Name != "perm" {
		t.Fatalf("grown partition %+v, want perm ending at LBA %d", p, wantLast)
	}
	got, err := Read(m, grown)
	if err != nil {
		t.Fatal(err)
	}
	root := tab.Partitions[1]
	root.Number = 2
	if got.Partitions[2].LastLBA != wantLast || got.Partitions[1] != root || got.DiskGUID != tab.DiskGUID {
		t.Fatalf("table after Grow: %+v", got)
	}
	// The backup alone holds the same table.
	if bt, err := readAt(m, grown/SectorBytes, grown/SectorBytes-1); err != nil || bt.Partitions[2].LastLBA != wantLast {
		t.Fatalf("backup after Grow: %+v, %v", bt, err)
	}
	v := sfdisk(t, m.b)
	if n := len(v.PartitionTable.Partitions); n != 3 || v.PartitionTable.Partitions[2].Start+v.PartitionTable.Partitions[2].Size-1 != wantLast {
		t.Fatalf("sfdisk sees %+v, want perm ending at %d", v.PartitionTable, wantLast)
	}
	if m.b[446+4] != 0xEE || le32(m.b[446+12:]) != uint32(grown/SectorBytes-1) {
		t.Errorf("protective MBR covers %d sectors, want %d", le32(m.b[446+12:]), grown/SectorBytes-1)
	}
	// Again: nothing to do.
	m.writes = 0
	if _, changed, err := Grow(m, grown, 3); err != nil || changed || m.writes != 0 {
		t.Fatalf("second Grow = %v, %v after %d writes, want no change", changed, err, m.writes)
	}
	// Grown once more, the entry array goes back to LBA 2.
	const twice = 96 * growMiB
	m.b = append(m.b, make([]byte, twice-grown)...)
	if _, changed, err := Grow(m, twice, 3); err != nil || !changed {
		t.Fatalf("Grow to %d: %v, %v", twice, changed, err)
	}
	v = sfdisk(t, m.b)
	if last := v.PartitionTable.Partitions[2].Start + v.PartitionTable.Partitions[2].Size - 1; last != uint64(twice/SectorBytes)-1-backupSectors {
		t.Fatalf("after the second grow sfdisk sees perm end at %d", last)
	}
}

// TestGrowPowerCut cuts the power at every write of Grow, tearing that
// write: the primary table must stay valid (Linux reads only the primary)
// and hold the old or the new table, and Grow at the next boot must finish
// the job.
func TestGrowPowerCut(t *testing.T) {
	const grown = 64 * growMiB
	ref, _ := smallDisk(t, grown)
	if _, _, err := Grow(ref, grown, 3); err != nil {
		t.Fatal(err)
	}
	total := ref.writes
	if total < 4 {
		t.Fatalf("Grow wrote %d times", total)
	}
	var oldLast uint64
	newLast := uint64(grown/SectorBytes) - 1 - backupSectors
	for cut := 0; cut < total; cut++ {
		m, tab := smallDisk(t, grown)
		oldLast = tab.Partitions[2].LastLBA
		m.cut = cut
		if _, _, err := Grow(m, grown, 3); err != nil {
			t.Fatalf("cut at write %d: Grow: %v", cut, err)
		}
		primary, err := readAt(m, grown/SectorBytes, primaryHeaderLBA)
		if err != nil {
			t.Fatalf("cut at write %d: the primary table is invalid: %v", cut, err)
		}
		if last := primary.Partitions[2].LastLBA; last != oldLast && last != newLast {
			t.Fatalf("cut at write %d: perm ends at %d, want %d (old) or %d (new)", cut, last, oldLast, newLast)
		}
		m.cut = -1
		if _, _, err := Grow(m, grown, 3); err != nil {
			t.Fatalf("cut at write %d: Grow at the next boot: %v", cut, err)
		}
		got, err := Read(m, grown)
		if err != nil || got.Partitions[2].LastLBA != newLast {
			t.Fatalf("cut at write %d: after the next boot's Grow: %+v, %v", cut, got, err)
		}
		if bt, err := readAt(m, grown/SectorBytes, grown/SectorBytes-1); err != nil || bt.Partitions[2].LastLBA != newLast {
			t.Fatalf("cut at write %d: backup after the next boot's Grow: %+v, %v", cut, bt, err)
		}
	}
}

func TestGrowErrors(t *testing.T) {
	const grown = 16 * growMiB
	m, _ := smallDisk(t, grown)
	if _, _, err := Grow(m, grown, 2); !errors.Is(err, ErrNotLast) {
		t.Errorf("Grow(root) = %v, want ErrNotLast", err)
	}
	if _, _, err := Grow(m, grown, 5); err == nil {
		t.Errorf("Grow(unused entry) succeeded")
	}
	if _, _, err := Grow(m, 4*growMiB, 3); err == nil {
		t.Errorf("Grow on a disk smaller than its table succeeded")
	}
	if m.writes != 0 {
		t.Errorf("refused grows wrote %d times", m.writes)
	}
	// A disk as built (not resized) is left alone.
	same, _ := smallDisk(t, 8*growMiB)
	if _, changed, err := Grow(same, 8*growMiB, 3); err != nil || changed || same.writes != 0 {
		t.Errorf("Grow on an unresized disk = %v, %v, %d writes", changed, err, same.writes)
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
