package mbr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type memDisk []byte

func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }
func (m memDisk) ReadAt(p []byte, off int64) (int, error)  { return bytes.NewReader(m).ReadAt(p, off) }

const testDiskBytes = 64 << 20

// piTable is the Raspberry Pi layout: FAT boot first, then root A/B and perm.
func piTable() Table {
	var t Table
	t.DiskID = 0x2e1a7c05
	t.Partitions[0] = Partition{Type: TypeFAT32LBA, Bootable: true, FirstLBA: 2048, Sectors: 16384}
	t.Partitions[1] = Partition{Type: TypeLinux, FirstLBA: 18432, Sectors: 32768}
	t.Partitions[2] = Partition{Type: TypeLinux, FirstLBA: 51200, Sectors: 32768}
	t.Partitions[3] = Partition{Type: TypeLinux, FirstLBA: 83968, Sectors: testDiskBytes/SectorBytes - 83968}
	return t
}

func TestWriteSfdisk(t *testing.T) {
	tab := piTable()
	img := filepath.Join(t.TempDir(), "pi.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(testDiskBytes); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, testDiskBytes, tab); err != nil {
		t.Fatalf("Write: %v", err)
	}
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var got struct {
		PartitionTable struct {
			Label, ID  string
			Partitions []struct {
				Start, Size uint64
				Type        string
				Bootable    bool
			}
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("sfdisk --json output %s: %v", out, err)
	}
	pt := got.PartitionTable
	if pt.Label != "dos" || pt.ID != "0x2e1a7c05" || len(pt.Partitions) != 4 {
		t.Fatalf("sfdisk --json = %s, want dos label 0x2e1a7c05 with 4 partitions", out)
	}
	for i, p := range tab.Partitions {
		g := pt.Partitions[i]
		if g.Start != uint64(p.FirstLBA) || g.Size != uint64(p.Sectors) || g.Type != fmt.Sprintf("%x", byte(p.Type)) || g.Bootable != p.Bootable {
			t.Errorf("sfdisk partition %d = %+v, want %+v", i+1, g, p)
		}
	}
	if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
	if got, err := Read(f); err != nil || got != tab {
		t.Errorf("Read(Write(t)) = %+v, %v, want %+v", got, err, tab)
	}
}

func TestPartUUID(t *testing.T) {
	if got, want := piTable().PartUUID(2), "2e1a7c05-02"; got != want {
		t.Errorf("PartUUID(2) = %q, want %q", got, want)
	}
}

func TestCHS(t *testing.T) {
	for _, tc := range []struct {
		lba  uint64
		want []byte
	}{
		{1, []byte{0, 2, 0}},
		{2048, []byte{32, 33, 0}},
		{1000000, []byte{63, 2, 62}},
		{16450559, []byte{254, 255, 255}}, // the last sector of cylinder 1023
		{1 << 32, []byte{254, 255, 255}},  // saturated
	} {
		if got := chs(tc.lba); !bytes.Equal(got, tc.want) {
			t.Errorf("chs(%d) = % x, want % x", tc.lba, got, tc.want)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Table)
		disk   int64
		want   string
	}{
		{"odd disk", func(*Table) {}, testDiskBytes + 1, "multiple of 512"},
		{"zero sectors", func(t *Table) { t.Partitions[1].Sectors = 0 }, 0, "zero sectors"},
		{"sector zero", func(t *Table) { t.Partitions[0].FirstLBA = 0 }, 0, "sector 0"},
		{"past end", func(t *Table) { t.Partitions[3].Sectors++ }, 0, "past the end"},
		{"overlap", func(t *Table) { t.Partitions[2].FirstLBA-- }, 0, "overlaps partition 2"},
	} {
		tab := piTable()
		tc.modify(&tab)
		disk := tc.disk
		if disk == 0 {
			disk = testDiskBytes
		}
		if err := Write(make(memDisk, SectorBytes), disk, tab); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Write() = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestReadErrors(t *testing.T) {
	if _, err := Read(make(memDisk, SectorBytes)); err != ErrNoTable {
		t.Errorf("Read(zeros) = %v, want ErrNoTable", err)
	}
	if _, err := Read(make(memDisk, 100)); err == nil {
		t.Errorf("Read(short) = nil, want error")
	}
	wrap := encode(piTable())
	copy(wrap[446+3*16+8:], []byte{0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0})
	if _, err := Read(memDisk(wrap)); err == nil || !strings.Contains(err.Error(), "wrap") {
		t.Errorf("Read(wrapping entry) = %v, want wrap error", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add(encode(piTable()))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Read(memDisk(b))
		if err != nil {
			return
		}
		again, err := decode(encode(tab))
		if err != nil || again != tab {
			t.Errorf("decode(encode(%+v)) = %+v, %v", tab, again, err)
		}
	})
}
