package vdisk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sparseImage writes a sparse raw image of size bytes with data at the
// given offsets: random (incompressible) blocks, a block of written zeros
// (data to SEEK_DATA, a zero block to the scan), text, and a last byte.
func sparseImage(t *testing.T, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	writes := []struct {
		off int64
		b   []byte
	}{
		{0, []byte("sector zero")},
		{512*1024 + 100, random(200 << 10)},                           // spans 4 blocks, unaligned
		{3 << 20, make([]byte, 256<<10)},                              // written zeros
		{(512 << 20) - 1000, random(3000)},                            // crosses the first L2 table's end
		{(32 << 20) + 65536*7, bytes.Repeat([]byte("ingot "), 20000)}, // compressible
		{size - 1, []byte{0xAA}},                                      // the last byte
	}
	for _, w := range writes {
		if w.off+int64(len(w.b)) > size {
			continue
		}
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuFormat is QEMU's name for each format qemu-img reads directly.
var qemuFormat = map[Format]string{Raw: "raw", QCOW2: "qcow2", VHD: "vpc", VMDK: "vmdk"}

func TestConvertQEMUJudges(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img (qemu-utils, scripts/setup.sh) is needed to judge the formats: %v", err)
	}
	for _, size := range []int64{600 << 20, 3<<20 + 64<<10} {
		dir := t.TempDir()
		raw := sparseImage(t, dir, size)
		opts := Options{ModTime: time.Unix(1700000000, 0)}
		for _, f := range []Format{Raw, QCOW2, VHD, VMDK, GCE} {
			t.Run(string(f)+"/"+filepath.Base(raw)+"/"+itoa(size), func(t *testing.T) {
				out := filepath.Join(dir, "a", "disk"+f.Ext())
				again := filepath.Join(dir, "b", "disk"+f.Ext())
				for _, p := range []string{out, again} {
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := Convert(context.Background(), f, raw, p, opts); err != nil {
						t.Fatal(err)
					}
				}
				if fileSum(t, out) != fileSum(t, again) {
					t.Fatalf("two conversions of the same image differ")
				}
				if f == GCE {
					checkGCE(t, raw, out, opts.ModTime)
					return
				}
				qf := qemuFormat[f]
				if f == QCOW2 || f == VMDK {
					t.Log(qemuImg(t, "check", "-f", qf, out))
				}
				// compare: the extra space of a longer image (VHD's MiB
				// rounding) must read as zeros.
				qemuImg(t, "compare", "-f", "raw", raw, "-F", qf, out)
				info := qemuImg(t, "info", "-f", qf, out)
				t.Log(info)
				st, _ := os.Stat(out)
				du, _ := statBlocks(out)
				t.Logf("%s: %d bytes, %d allocated", f, st.Size(), du)
				if (f == QCOW2 || f == VMDK) && st.Size() > 4<<20 {
					t.Errorf("%s of a mostly empty %d-byte image is %d bytes; zero blocks must not be stored", f, size, st.Size())
				}
				if f == VHD {
					checkVHD(t, out, size)
				}
			})
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// statBlocks returns the bytes a file has allocated.
func statBlocks(path string) (int64, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Blocks * 512, true
}

func checkGCE(t *testing.T, raw, out string, mod time.Time) {
	t.Helper()
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header has time %v, name %q; want neither", zr.ModTime, zr.Name)
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "disk.raw" || h.Format != tar.FormatGNU || !h.ModTime.Equal(mod) {
		t.Errorf("tar entry %q, format %v, time %v; want disk.raw, GNU, %v", h.Name, h.Format, h.ModTime, mod)
	}
	if h.Size%(1<<30) != 0 || h.Size < rawSize(t, raw) || h.Size-rawSize(t, raw) >= 1<<30 {
		t.Fatalf("disk.raw is %d bytes for a %d-byte image; want it padded to a whole GiB", h.Size, rawSize(t, raw))
	}
	// Stream: the image, then zeros.
	rf, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	want := io.MultiReader(rf, io.LimitReader(zeros{}, h.Size-rawSize(t, raw)))
	gb, wb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < h.Size; off += int64(len(gb)) {
		if _, err := io.ReadFull(tr, gb); err != nil {
			t.Fatalf("disk.raw at byte %d: %v", off, err)
		}
		if _, err := io.ReadFull(want, wb); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gb, wb) {
			t.Fatalf("disk.raw differs from the image (then zeros) in the MiB at byte %d", off)
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("a second tar entry: %v", err)
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func rawSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func checkVHD(t *testing.T, path string, rawSize int64) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, 512)
	if _, err := fh.ReadAt(f, st.Size()-512); err != nil {
		t.Fatal(err)
	}
	size := int64(binary.BigEndian.Uint64(f[48:]))
	if size%(1<<20) != 0 || size < rawSize || size-rawSize >= 1<<20 {
		t.Errorf("VHD current size %d for a %d-byte image; want it rounded up to 1 MiB", size, rawSize)
	}
	if st.Size() != size+512 {
		t.Errorf("VHD file %d bytes, want size %d + footer", st.Size(), size)
	}
	if got, want := binary.BigEndian.Uint32(f[64:]), vhdChecksum(f); got != want {
		t.Errorf("footer checksum %#x, want %#x", got, want)
	}
	if string(f[:8]) != "conectix" || binary.BigEndian.Uint32(f[60:]) != vhdDiskTypeFixed {
		t.Errorf("footer cookie %q, type %d", f[:8], binary.BigEndian.Uint32(f[60:]))
	}
}

// TestVHDGeometry checks the CHS algorithm against values of the
// specification's algorithm worked by hand.
func TestVHDGeometry(t *testing.T) {
	for _, c := range []struct {
		sectors    int64
		cyl        uint16
		heads, spt uint8
	}{
		{4 << 20 / 512, 120, 4, 17},            // 8192 sectors: cth 481, heads 4
		{1 << 30 / 512, 2080, 16, 63},          // 1 GiB: 17 → 31 → 63 spt
		{127 << 30 / 512, 65278, 16, 255},      // beyond 65535*16*63
		{65535 * 16 * 255 * 2, 65535, 16, 255}, // capped
	} {
		cyl, heads, spt := vhdGeometry(c.sectors)
		if cyl != c.cyl || heads != c.heads || spt != c.spt {
			t.Errorf("vhdGeometry(%d) = %d/%d/%d, want %d/%d/%d", c.sectors, cyl, heads, spt, c.cyl, c.heads, c.spt)
		}
	}
}

// TestConvertKeepsPermissions: an image holds the appliance's keys, and
// ingot build writes it 0600; no copy may be readable by more users.
func TestConvertKeepsPermissions(t *testing.T) {
	dir := t.TempDir()
	raw := sparseImage(t, dir, 3<<20)
	if err := os.Chmod(raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{Raw, QCOW2, VHD, VMDK, GCE} {
		out := filepath.Join(dir, "copy"+f.Ext())
		if err := Convert(context.Background(), f, raw, out, Options{}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s copy of a 0600 image has mode %v", f, st.Mode().Perm())
		}
	}
}

func TestStreamOptimizedVMDKRejectsPartialGrain(t *testing.T) {
	dir := t.TempDir()
	raw := sparseImage(t, dir, 3<<20+512)
	err := Convert(context.Background(), VMDK, raw, filepath.Join(dir, "x.vmdk"), Options{})
	if err == nil || !strings.Contains(err.Error(), "grains") {
		t.Fatalf("Convert of a partial grain: %v, want an error naming the grain size", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.vmdk")); !os.IsNotExist(err) {
		t.Fatalf("a failed conversion left x.vmdk: %v", err)
	}
}

func TestParseFormat(t *testing.T) {
	for _, n := range Names() {
		if f, err := ParseFormat(n); err != nil || string(f) != n {
			t.Errorf("ParseFormat(%q) = %q, %v", n, f, err)
		}
	}
	if _, err := ParseFormat("vdi"); err == nil || !strings.Contains(err.Error(), `"vdi"`) {
		t.Errorf("ParseFormat(vdi): %v, want an error naming it", err)
	}
	if got := PathFor("/x/hello-vm-amd64.img", GCE); got != "/x/hello-vm-amd64.tar.gz" {
		t.Errorf("PathFor gce = %s", got)
	}
}
