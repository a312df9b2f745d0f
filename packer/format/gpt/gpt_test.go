package gpt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/format/mbr"
)

// memDisk is an in-memory disk image.
type memDisk []byte

func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }
func (m memDisk) ReadAt(p []byte, off int64) (int, error)  { return bytes.NewReader(m).ReadAt(p, off) }

const testDiskBytes = 64 << 20

// testTable is the ingot layout: boot, root-a, root-b, perm.
func testTable(t *testing.T, diskBytes int64) Table {
	t.Helper()
	ext, err := Layout(diskBytes, 8<<20, 16<<20, 16<<20, 0)
	if err != nil {
		t.Fatalf("Layout: %v", err)
	}
	names := []string{"boot", "root-a", "root-b", "perm"}
	types := []GUID{TypeEFISystem, TypeLinuxRootAMD64, TypeLinuxRootAMD64, TypeLinuxFilesystem}
	tab := Table{DiskGUID: GUIDFromName("ingot test", "disk")}
	for i, e := range ext {
		tab.Partitions = append(tab.Partitions, Partition{
			Number: i + 1, Name: names[i], Type: types[i],
			GUID:     GUIDFromName("ingot test", names[i]),
			FirstLBA: e.FirstLBA, LastLBA: e.LastLBA,
		})
	}
	tab.Partitions[0].Attributes = AttrLegacyBIOSBootable
	return tab
}

func writeImage(t *testing.T, diskBytes int64, tab Table, opts ...Option) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(diskBytes); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, diskBytes, tab, opts...); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return path
}

func TestWriteSfdisk(t *testing.T) {
	tab := testTable(t, testDiskBytes)
	img := writeImage(t, testDiskBytes, tab)

	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var got struct {
		PartitionTable struct {
			Label      string
			ID         string
			Partitions []struct {
				Start, Size uint64
				Type, UUID  string
				Name        string
				Attrs       string
			}
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("sfdisk --json output %s: %v", out, err)
	}
	pt := got.PartitionTable
	if pt.Label != "gpt" || !strings.EqualFold(pt.ID, tab.DiskGUID.String()) {
		t.Errorf("sfdisk label, id = %q, %q, want gpt, %s", pt.Label, pt.ID, tab.DiskGUID)
	}
	if len(pt.Partitions) != len(tab.Partitions) {
		t.Fatalf("sfdisk shows %d partitions, want %d:\n%s", len(pt.Partitions), len(tab.Partitions), out)
	}
	for i, p := range tab.Partitions {
		g := pt.Partitions[i]
		if g.Start != p.FirstLBA || g.Size != p.LastLBA-p.FirstLBA+1 || !strings.EqualFold(g.Type, p.Type.String()) ||
			!strings.EqualFold(g.UUID, p.GUID.String()) || g.Name != p.Name {
			t.Errorf("sfdisk partition %d = %+v, want start %d size %d type %s uuid %s name %q",
				i+1, g, p.FirstLBA, p.LastLBA-p.FirstLBA+1, p.Type, p.GUID, p.Name)
		}
	}
	if pt.Partitions[0].Attrs != "LegacyBIOSBootable" {
		t.Errorf("sfdisk partition 1 attrs = %q, want LegacyBIOSBootable", pt.Partitions[0].Attrs)
	}
	if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
}

func TestRoundTrip(t *testing.T) {
	tab := testTable(t, testDiskBytes)
	tab.Partitions[2].Name = "ünïcødé-名前-😀"
	tab.Partitions[3].Attributes = AttrRequired | 1<<60
	disk := make(memDisk, testDiskBytes)
	if err := Write(disk, testDiskBytes, tab); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := Read(disk, testDiskBytes)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !tablesEqual(got, tab) {
		t.Errorf("Read(Write(t)) = %+v, want %+v", got, tab)
	}
	p, ok := got.Find(tab.Partitions[1].GUID)
	if !ok || p.Number != 2 || p.OffsetBytes() != 9<<20 || p.SizeBytes() != 16<<20 {
		t.Errorf("Find(root-a) = %+v, %v, want number 2 at 9 MiB, 16 MiB", p, ok)
	}
}

func tablesEqual(a, b Table) bool {
	if a.DiskGUID != b.DiskGUID || len(a.Partitions) != len(b.Partitions) {
		return false
	}
	for i := range a.Partitions {
		if a.Partitions[i] != b.Partitions[i] {
			return false
		}
	}
	return true
}

func TestSparseNumbers(t *testing.T) {
	tab := testTable(t, testDiskBytes)
	tab.Partitions = tab.Partitions[:2]
	tab.Partitions[1].Number = 7
	disk := make(memDisk, testDiskBytes)
	if err := Write(disk, testDiskBytes, tab); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := Read(disk, testDiskBytes)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got.Partitions) != 2 || got.Partitions[0].Number != 1 || got.Partitions[1].Number != 7 {
		t.Errorf("Read numbers = %+v, want 1 and 7", got.Partitions)
	}
}

func TestBackupFallback(t *testing.T) {
	tab := testTable(t, testDiskBytes)
	sectors := int64(testDiskBytes / SectorBytes)
	for _, tc := range []struct {
		name    string
		corrupt func(memDisk)
		wantErr bool
	}{
		{"intact", func(memDisk) {}, false},
		{"primary header signature", func(d memDisk) { d[SectorBytes] = 'X' }, false},
		{"primary header crc", func(d memDisk) { d[SectorBytes+40]++ }, false},
		{"primary entries", func(d memDisk) { d[2*SectorBytes+60]++ }, false},
		{"primary zeroed", func(d memDisk) { clear(d[:34*SectorBytes]) }, false},
		{"backup only", func(d memDisk) { d[(sectors-1)*SectorBytes] = 0 }, false},
		{"both headers", func(d memDisk) { d[SectorBytes] = 0; d[(sectors-1)*SectorBytes] = 0 }, true},
		{"both entry arrays", func(d memDisk) { d[2*SectorBytes+60]++; d[(sectors-33)*SectorBytes+60]++ }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := make(memDisk, testDiskBytes)
			if err := Write(disk, testDiskBytes, tab); err != nil {
				t.Fatalf("Write: %v", err)
			}
			tc.corrupt(disk)
			got, err := Read(disk, testDiskBytes)
			if tc.wantErr {
				if err == nil {
					t.Errorf("Read = %+v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !tablesEqual(got, tab) {
				t.Errorf("Read = %+v, want %+v", got, tab)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Table)
		disk   int64
		want   string
	}{
		{"disk too small", func(*Table) {}, 4096, "disk size"},
		{"odd disk size", func(*Table) {}, testDiskBytes + 1, "disk size"},
		{"zero disk guid", func(t *Table) { t.DiskGUID = GUID{} }, 0, "disk GUID is zero"},
		{"zero type", func(t *Table) { t.Partitions[1].Type = GUID{} }, 0, "type GUID is zero"},
		{"zero guid", func(t *Table) { t.Partitions[1].GUID = GUID{} }, 0, "partition GUID is zero"},
		{"dup guid", func(t *Table) { t.Partitions[1].GUID = t.Partitions[0].GUID }, 0, "also used by partition 1"},
		{"overlap", func(t *Table) { t.Partitions[1].FirstLBA = t.Partitions[0].LastLBA }, 0, "overlaps partition 1"},
		{"in gpt area", func(t *Table) { t.Partitions[0].FirstLBA = 33 }, 0, "outside usable"},
		{"past end", func(t *Table) { t.Partitions[3].LastLBA = testDiskBytes / SectorBytes }, 0, "outside usable"},
		{"reversed", func(t *Table) { t.Partitions[0].LastLBA = t.Partitions[0].FirstLBA - 1 }, 0, "outside usable"},
		{"long name", func(t *Table) { t.Partitions[0].Name = strings.Repeat("x", 37) }, 0, "at most 36"},
		{"number twice", func(t *Table) { t.Partitions[1].Number = 1 }, 0, "entry used twice"},
		{"number range", func(t *Table) { t.Partitions[1].Number = 129 }, 0, "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := testTable(t, testDiskBytes)
			tc.modify(&tab)
			disk := tc.disk
			if disk == 0 {
				disk = testDiskBytes
			}
			err := Write(make(memDisk, testDiskBytes+SectorBytes), disk, tab)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Write() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestProtectiveMBR(t *testing.T) {
	tab := testTable(t, testDiskBytes)
	disk := make(memDisk, testDiskBytes)
	if err := Write(disk, testDiskBytes, tab); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := mbr.Read(disk)
	if err != nil {
		t.Fatalf("mbr.Read: %v", err)
	}
	want := mbr.Table{}
	want.Partitions[0] = mbr.Partition{Type: mbr.TypeGPTProtective, FirstLBA: 1, Sectors: testDiskBytes/SectorBytes - 1}
	if got != want {
		t.Errorf("protective MBR = %+v, want %+v", got, want)
	}
	// UEFI: the 0xEE entry starts at CHS 0/0/2 and is not bootable.
	if e := disk[446:462]; e[0] != 0 || e[1] != 0 || e[2] != 2 || e[3] != 0 {
		t.Errorf("protective entry = % x, want status 00 and start CHS 00 02 00", e)
	}
}

func TestHybridMBR(t *testing.T) {
	tab := testTable(t, testDiskBytes)
	img := writeImage(t, testDiskBytes, tab, WithHybridMBR(Hybrid{Number: 1, Type: mbr.TypeFAT32LBA, Bootable: true}))
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := mbr.Read(f)
	if err != nil {
		t.Fatalf("mbr.Read: %v", err)
	}
	boot := tab.Partitions[0]
	want := mbr.Table{}
	want.Partitions[0] = mbr.Partition{Type: mbr.TypeFAT32LBA, Bootable: true, FirstLBA: uint32(boot.FirstLBA), Sectors: uint32(boot.LastLBA - boot.FirstLBA + 1)}
	want.Partitions[1] = mbr.Partition{Type: mbr.TypeGPTProtective, FirstLBA: 1, Sectors: uint32(boot.FirstLBA - 1)}
	if got != want {
		t.Errorf("hybrid MBR = %+v, want %+v", got, want)
	}
	// Linux tools still see the GPT.
	out, err := exec.Command("sfdisk", "-d", img).Output()
	if err != nil || !strings.Contains(string(out), "label: gpt") || !strings.Contains(string(out), `name="perm"`) {
		t.Errorf("sfdisk -d on hybrid disk: %v\n%s", err, out)
	}
	out, err = exec.Command("fdisk", "-t", "dos", "-l", img).Output()
	if err != nil || !strings.Contains(string(out), " c W95 FAT32 (LBA)") {
		t.Errorf("fdisk -t dos -l: %v\n%s", err, out)
	}
	if _, err := Read(f, testDiskBytes); err != nil {
		t.Errorf("Read(hybrid) = %v", err)
	}

	for _, h := range [][]Hybrid{
		{{Number: 10, Type: mbr.TypeFAT32LBA}},
		{{Number: 1, Type: mbr.TypeGPTProtective}},
		{{Number: 1, Type: 0x0c}, {Number: 2, Type: 0x83}, {Number: 3, Type: 0x83}, {Number: 4, Type: 0x83}},
		{{Number: 0, Type: 0x0c}},
	} {
		if err := Write(make(memDisk, testDiskBytes), testDiskBytes, tab, WithHybridMBR(h...)); err == nil {
			t.Errorf("Write(WithHybridMBR(%+v)) = nil, want error", h)
		}
	}
}

func FuzzRead(f *testing.F) {
	// The smallest disk keeps inputs small for the fuzzer.
	const diskBytes = minDiskSectors * SectorBytes
	tab := Table{DiskGUID: GUIDFromName("fuzz", "disk"), Partitions: []Partition{
		{Name: "only", Type: TypeLinuxFilesystem, GUID: GUIDFromName("fuzz", "p"), FirstLBA: firstUsableLBA, LastLBA: firstUsableLBA},
	}}
	disk := make(memDisk, diskBytes)
	if err := Write(disk, diskBytes, tab); err != nil {
		f.Fatalf("Write: %v", err)
	}
	f.Add([]byte(disk), false)
	primaryBroken := bytes.Clone(disk)
	primaryBroken[SectorBytes+8] = 9
	f.Add(primaryBroken, true)
	f.Add(make([]byte, diskBytes), false)
	f.Fuzz(func(t *testing.T, b []byte, fixCRCs bool) {
		size := int64(len(b)) / SectorBytes * SectorBytes
		if fixCRCs && size >= 2*SectorBytes {
			// Recompute the primary CRCs so that mutations reach the
			// checks behind them.
			h := b[SectorBytes : 2*SectorBytes]
			count, esize := binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint32(h[84:])
			if n := uint64(count) * uint64(esize); n <= uint64(size)-2*SectorBytes {
				binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(b[2*SectorBytes:][:n]))
			}
			if hs := binary.LittleEndian.Uint32(h[12:]); hs >= 20 && hs <= SectorBytes {
				binary.LittleEndian.PutUint32(h[16:], 0)
				binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
			}
		}
		tab, err := Read(memDisk(b), size)
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.FirstLBA > p.LastLBA || p.LastLBA >= uint64(size/SectorBytes) {
				t.Errorf("Read accepted partition %+v on a disk of %d bytes", p, size)
			}
		}
	})
}
