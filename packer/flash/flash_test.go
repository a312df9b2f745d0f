package flash

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/disk"
	"github.com/ingotdev/ingot/packer/ext4"
	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/mbr"
	"github.com/ingotdev/ingot/packer/rootfs"
)

const (
	testPermBytes = 16 << 20
	testSlotBytes = 4 << 20
	// testTargetBytes is the card the tests flash: larger than the image,
	// so perm grows.
	testTargetBytes = 256 << 20
)

// testImage writes a real appliance image (disk.Write, hybrid MBR as for
// the Pi) and returns its path and size.
func testImage(t *testing.T) (string, int64) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "app.img")
	_, err := disk.Write(t.Context(), img, disk.Spec{
		Name: "flashtest", Target: "rpi", Arch: "arm64", BuildID: "b1",
		Kernel: []byte("kernel"), Initrd: []byte("initrd"), Root: rootfs.New(1700000000), ModTime: 1700000000,
		RootSlotBytes: testSlotBytes, PermBytes: testPermBytes, HybridMBR: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, st.Size()
}

func emptyFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "card.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha256File(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	p, err := ext4.LookTool(name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkFlashed checks target after Flash grew perm to its end: the
// partitions before perm are the image's bytes, the tables (GPT and hybrid
// MBR) are intact and valid, and perm is a clean ext4 with the image's
// label and UUID spanning the partition.
func checkFlashed(t *testing.T, img string, imageBytes int64, target string, targetBytes int64, rep *Report) {
	t.Helper()
	imgF, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer imgF.Close()
	before, err := gpt.Read(imgF, imageBytes)
	if err != nil {
		t.Fatal(err)
	}
	tf, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	after, err := gpt.Read(tf, targetBytes)
	if err != nil {
		t.Fatalf("gpt.Read(target) = %v: the grown table does not read back", err)
	}
	if len(after.Partitions) != len(before.Partitions) {
		t.Fatalf("partitions after flash = %d, want %d", len(after.Partitions), len(before.Partitions))
	}
	for i, p := range before.Partitions[:len(before.Partitions)-1] {
		if after.Partitions[i] != p {
			t.Errorf("partition %d after flash = %+v, want %+v", i+1, after.Partitions[i], p)
		}
		a := make([]byte, p.SizeBytes())
		b := make([]byte, p.SizeBytes())
		if _, err := imgF.ReadAt(a, p.OffsetBytes()); err != nil {
			t.Fatal(err)
		}
		if _, err := tf.ReadAt(b, p.OffsetBytes()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("partition %d (%s): contents differ from the image", i+1, p.Name)
		}
	}
	perm := after.Partitions[3]
	wantLast := uint64(targetBytes/512) - 34
	if perm.Name != "perm" || perm.FirstLBA != before.Partitions[3].FirstLBA || perm.LastLBA != wantLast {
		t.Errorf("perm after flash = %+v, want first LBA %d, last LBA %d", perm, before.Partitions[3].FirstLBA, wantLast)
	}
	if rep.Perm.Partition != 4 || rep.Perm.OffsetBytes != perm.OffsetBytes() || rep.Perm.SizeBytes != perm.SizeBytes() {
		t.Errorf("Report.Perm = %+v, want partition 4 at %d, %d bytes", rep.Perm, perm.OffsetBytes(), perm.SizeBytes())
	}

	// Independent tools: sfdisk sees the GPT and the hybrid MBR the Pi
	// boot ROM reads; e2fsck and dumpe2fs see a clean perm.
	dump := runTool(t, "sfdisk", "-d", target)
	if !strings.Contains(dump, "last-lba: "+strconv.FormatUint(wantLast, 10)) ||
		!regexp.MustCompile(`start=\s*`+strconv.FormatUint(perm.FirstLBA, 10)+`, size=\s*`+strconv.FormatUint(wantLast-perm.FirstLBA+1, 10)+`, .*name="perm"`).MatchString(dump) {
		t.Errorf("sfdisk -d %s: want perm up to LBA %d:\n%s", target, wantLast, dump)
	}
	nested := runTool(t, "sfdisk", "--label-nested", "dos", "-d", target)
	if !regexp.MustCompile(`(?m)1 : start=\s*2048, size=\s*\d+, type=c, bootable$`).MatchString(nested) ||
		!regexp.MustCompile(`(?m)2 : start=\s*1, size=\s*2047, type=ee$`).MatchString(nested) {
		t.Errorf("sfdisk --label-nested dos -d: the hybrid MBR did not survive:\n%s", nested)
	}
	permImg := filepath.Join(t.TempDir(), "perm.ext4")
	out, err := os.Create(permImg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(tf, perm.OffsetBytes(), perm.SizeBytes())); err != nil {
		t.Fatal(err)
	}
	out.Close()
	runTool(t, "e2fsck", "-fn", permImg)
	sb := runTool(t, "dumpe2fs", "-h", permImg)
	orig, err := permIdentity(imgF, 4, before.Partitions[3].OffsetBytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Filesystem volume name:   perm\n",
		"Filesystem UUID:          " + orig.UUID + "\n",
		"Block count:              " + strconv.FormatInt(perm.SizeBytes()/4096, 10) + "\n",
	} {
		if !strings.Contains(sb, want) {
			t.Errorf("dumpe2fs -h perm: no %q in\n%s", want, sb)
		}
	}
	if orig.UUID == "" {
		t.Errorf("permIdentity(image) has no UUID: the image's perm should be ext4")
	}
}

func TestFlashRegularFile(t *testing.T) {
	img, imageBytes := testImage(t)
	target := emptyFile(t, testTargetBytes)
	var phases []Phase
	var lastDone int64
	asked := false
	rep, err := Flash(t.Context(), img, target,
		WithConfirm(func(tg Target, n int64) (bool, error) {
			asked = true
			if tg.Block || tg.SizeBytes != testTargetBytes || n != imageBytes {
				t.Errorf("confirm(%+v, %d): want a %d-byte regular file and %d image bytes", tg, n, testTargetBytes, imageBytes)
			}
			return true, nil
		}),
		WithProgress(func(p Progress) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
			lastDone = p.Done
		}))
	if err != nil {
		t.Fatal(err)
	}
	if !asked {
		t.Errorf("Flash did not ask for confirmation")
	}
	if want := []Phase{PhaseWrite, PhaseVerify}; !slices.Equal(phases, want) || lastDone != imageBytes {
		t.Errorf("progress phases = %v ending at %d, want %v ending at %d", phases, lastDone, want, imageBytes)
	}
	if got := sha256File(t, img, imageBytes); rep.SHA256 != got {
		t.Errorf("Report.SHA256 = %s, want the image's %s", rep.SHA256, got)
	}
	checkFlashed(t, img, imageBytes, target, testTargetBytes, rep)
}

// TestFlashNoGrow covers the cases that leave the partition table as the
// image has it: a target of exactly the image's size, and WithoutGrow.
// The target's first bytes are then a copy of the image.
func TestFlashNoGrow(t *testing.T) {
	img, imageBytes := testImage(t)
	tests := []struct {
		name        string
		targetBytes int64
		opts        []Option
	}{
		{"same size", imageBytes, nil},
		{"same size but a partial sector", imageBytes + 100, nil},
		{"WithoutGrow", testTargetBytes, []Option{WithoutGrow()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := emptyFile(t, tc.targetBytes)
			rep, err := Flash(t.Context(), img, target, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Perm != (Grown{}) {
				t.Errorf("Report.Perm = %+v, want nothing grown", rep.Perm)
			}
			if a, b := sha256File(t, img, imageBytes), sha256File(t, target, imageBytes); a != b {
				t.Errorf("target SHA-256 %s, image %s", b, a)
			}
		})
	}
}

// TestFlashPartialSector grows perm on a file whose size is not a whole
// number of sectors: the table ends at the last whole sector.
func TestFlashPartialSector(t *testing.T) {
	img, imageBytes := testImage(t)
	target := emptyFile(t, testTargetBytes+100)
	rep, err := Flash(t.Context(), img, target)
	if err != nil {
		t.Fatal(err)
	}
	checkFlashed(t, img, imageBytes, target, testTargetBytes, rep)
}

func TestFlashRefusesFiles(t *testing.T) {
	img, imageBytes := testImage(t)
	small := emptyFile(t, imageBytes-1<<20)
	declined := emptyFile(t, testTargetBytes)
	tests := []struct {
		name, target string
		opts         []Option
		wantRefused  string // "" for ErrDeclined
	}{
		{"too small", small, nil, "smaller than the"},
		{"missing", filepath.Join(t.TempDir(), "none"), nil, "no such device or file"},
		{"the image itself", img, nil, "it is the image itself"},
		{"a directory", t.TempDir(), nil, "not a block device or a regular file"},
		{"answered n", declined, []Option{WithConfirm(Ask(strings.NewReader("n\n"), io.Discard))}, ""},
		{"no answer", declined, []Option{WithConfirm(Ask(strings.NewReader(""), io.Discard))}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Flash(t.Context(), img, tc.target, tc.opts...)
			checkRefused(t, err, tc.wantRefused)
		})
	}
	// Nothing was written to the declined target.
	if got, want := sha256File(t, declined, testTargetBytes), sha256File(t, emptyFile(t, testTargetBytes), testTargetBytes); got != want {
		t.Errorf("declined target was written to")
	}
}

func checkRefused(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if !errors.Is(err, ErrDeclined) {
			t.Errorf("Flash = %v, want ErrDeclined", err)
		}
		return
	}
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, want) {
		t.Errorf("Flash = %v, want a RefusedError saying %q", err, want)
	}
}

func TestAsk(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"y\n", true}, {"yes\n", true}, {" YES \n", true}, {"Y", true},
		{"n\n", false}, {"\n", false}, {"", false}, {"yep\n", false},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		got, err := Ask(strings.NewReader(tc.in), &out)(Target{Path: "/dev/sdz", Model: "Acme Card", Block: true, Removable: true, SizeBytes: 1 << 30}, 1<<20)
		if err != nil || got != tc.want {
			t.Errorf("Ask(%q) = %v, %v, want %v", tc.in, got, err, tc.want)
		}
		if !strings.Contains(out.String(), "/dev/sdz: Acme Card, 1.0 GiB (1073741824 bytes)") {
			t.Errorf("Ask(%q) printed %q, want the device, model and size", tc.in, out.String())
		}
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {64 << 20, "64.0 MiB"}, {31914983424, "29.7 GiB"}}
	for _, tc := range tests {
		if got := humanBytes(tc.in); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestFlashMBRImage grows the last partition of an image with a plain MBR
// (no GPT) when it is a Linux partition holding ext4.
func TestFlashMBRImage(t *testing.T) {
	const (
		mib        = 1 << 20
		imageBytes = 32 * mib
		bootFirst  = 2048
		bootSecs   = 8 * mib / 512
		permFirst  = 12 * mib / 512
		permBytes  = 16 * mib
	)
	dir := t.TempDir()
	permImg := filepath.Join(dir, "perm.ext4")
	if err := ext4.Make(t.Context(), permImg, permBytes, "", ext4.WithLabel("perm"), ext4.WithUUID("0f0e0d0c-0b0a-0908-0706-050403020100")); err != nil {
		t.Fatal(err)
	}
	perm, err := os.ReadFile(permImg)
	if err != nil {
		t.Fatal(err)
	}
	boot := bytes.Repeat([]byte("boot"), bootSecs*512/4)
	img := filepath.Join(dir, "mbr.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	table := mbr.Table{DiskID: 0x1234abcd}
	table.Partitions[0] = mbr.Partition{Type: mbr.TypeFAT32LBA, Bootable: true, FirstLBA: bootFirst, Sectors: bootSecs}
	table.Partitions[3] = mbr.Partition{Type: mbr.TypeLinux, FirstLBA: permFirst, Sectors: permBytes / 512}
	if err := f.Truncate(imageBytes); err != nil {
		t.Fatal(err)
	}
	if err := mbr.Write(f, imageBytes, table); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(boot, bootFirst*512); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(perm, permFirst*512); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	target := emptyFile(t, 64*mib)
	rep, err := Flash(t.Context(), img, target)
	if err != nil {
		t.Fatal(err)
	}
	wantPerm := Grown{Partition: 4, OffsetBytes: permFirst * 512, SizeBytes: 64*mib - permFirst*512, Label: "perm", UUID: "0f0e0d0c-0b0a-0908-0706-050403020100"}
	if rep.Perm != wantPerm {
		t.Errorf("Report.Perm = %+v, want %+v", rep.Perm, wantPerm)
	}
	dump := runTool(t, "sfdisk", "-d", target)
	for _, want := range []string{"label-id: 0x1234abcd", "start=        2048, size=       16384, type=c, bootable",
		"start=       24576, size=      106496, type=83"} {
		if !strings.Contains(dump, want) {
			t.Errorf("sfdisk -d: no %q in\n%s", want, dump)
		}
	}
	tf, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	got := make([]byte, len(boot))
	if _, err := tf.ReadAt(got, bootFirst*512); err != nil || !bytes.Equal(got, boot) {
		t.Errorf("boot partition changed (%v)", err)
	}
	grown := filepath.Join(dir, "grown.ext4")
	out, err := os.Create(grown)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(tf, wantPerm.OffsetBytes, wantPerm.SizeBytes)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	runTool(t, "e2fsck", "-fn", grown)
	if sb := runTool(t, "dumpe2fs", "-h", grown); !strings.Contains(sb, "Filesystem UUID:          "+wantPerm.UUID+"\n") ||
		!strings.Contains(sb, "Block count:              "+strconv.FormatInt(wantPerm.SizeBytes/4096, 10)+"\n") {
		t.Errorf("dumpe2fs -h: want UUID %s and %d blocks:\n%s", wantPerm.UUID, wantPerm.SizeBytes/4096, sb)
	}
}
