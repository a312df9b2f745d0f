package assemble

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/vmtest"
)

// helloConfig loads the hello example; the builder takes the kernel that
// vmtest.Kernel finds, as everywhere in the tests.
func helloConfig(t *testing.T) *config.Config {
	t.Helper()
	vmtest.Kernel(t, "amd64")
	cfg, err := config.Load("../../examples/hello/ingot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func TestImageIsReproducible(t *testing.T) {
	cfg := helloConfig(t)
	dir := t.TempDir()
	var reports []*Report
	for i, cache := range []string{filepath.Join(dir, "cache1"), filepath.Join(dir, "cache2")} {
		out := filepath.Join(dir, "hello"+string(rune('1'+i))+".img")
		rep, err := Image(t.Context(), cfg, config.TargetVMAmd64, out, WithCacheDir(cache))
		if err != nil {
			t.Fatal(err)
		}
		reports = append(reports, rep)
	}
	a, b := fileSHA(t, reports[0].Image), fileSHA(t, reports[1].Image)
	if a != b {
		t.Fatalf("two builds of the same inputs differ: %x vs %x", a, b)
	}
	if reports[0].BuildID != reports[1].BuildID || reports[0].BuildID == "" {
		t.Errorf("build ids %q and %q, want equal and non-empty", reports[0].BuildID, reports[1].BuildID)
	}
	checkImage(t, reports[0].Image)
}

// checkImage runs the independent judges over a built image.
func checkImage(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk -d: %v\n%s", err, out)
	}
	for _, name := range []string{`name="boot"`, `name="root-a"`, `name="root-b"`, `name="perm"`} {
		if !bytes.Contains(out, []byte(name)) {
			t.Errorf("sfdisk -d %s: no partition %s in\n%s", img, name, out)
		}
	}
	starts := partitionStarts(t, img)
	dir := t.TempDir()
	extract := func(i int, name string) string {
		p := filepath.Join(dir, name)
		cmd := exec.Command("dd", "if="+img, "of="+p, "bs=512", "skip="+starts[i][0], "count="+starts[i][1], "status=none")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dd: %v\n%s", err, out)
		}
		return p
	}
	boot := extract(0, "boot.fat")
	if out, err := exec.Command("fsck.vfat", "-n", boot).CombinedOutput(); err != nil {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	}
	root := extract(1, "root.sqfs")
	out, err = exec.Command("unsquashfs", "-l", root).CombinedOutput()
	if err != nil {
		t.Errorf("unsquashfs -l: %v\n%s", err, out)
	}
	for _, want := range []string{"squashfs-root/init", "squashfs-root/usr/bin/hello", "squashfs-root/etc/ingot/appliance.json"} {
		if !bytes.Contains(out, []byte(want+"\n")) {
			t.Errorf("unsquashfs -l: %s missing", want)
		}
	}
	checkRawExecutables(t, root)
	perm := extract(3, "perm.ext4")
	if out, err := exec.Command("e2fsck", "-fn", perm).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
}

// checkRawExecutables checks that unsquashfs extracts the root and that
// the full blocks of the appliance's programs are in it as they are
// (stored uncompressed, see ownExecutable).
func checkRawExecutables(t *testing.T, root string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("unsquashfs", "-no-xattrs", "-d", dir, root).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	image, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	const block = 128 << 10 // squashfs.DefaultBlockBytes
	for _, p := range []string{"init", "usr/bin/hello"} {
		prog, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if len(prog) < 2*block {
			t.Fatalf("/%s: %d bytes, want a program of several blocks", p, len(prog))
		}
		for _, off := range []int{0, len(prog) / block / 2 * block, (len(prog)/block - 1) * block} {
			if !bytes.Contains(image, prog[off:off+block]) {
				t.Errorf("/%s: the block at %d is not stored raw in the root", p, off)
			}
		}
	}
}

// partitionStarts returns [start, size] in sectors of each partition.
func partitionStarts(t *testing.T, img string) [][2]string {
	t.Helper()
	out, err := exec.Command("sfdisk", "-d", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var parts [][2]string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, "start=") {
			continue
		}
		var start, size string
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			if i := strings.Index(f, "start="); i >= 0 {
				start = strings.TrimSpace(f[i+len("start="):])
			}
			if strings.HasPrefix(f, "size=") {
				size = strings.TrimSpace(strings.TrimPrefix(f, "size="))
			}
		}
		parts = append(parts, [2]string{start, size})
	}
	if len(parts) != 4 {
		t.Fatalf("sfdisk -d: %d partitions, want 4:\n%s", len(parts), out)
	}
	return parts
}

func TestImageErrorsLeaveNoOutput(t *testing.T) {
	cfg := helloConfig(t)
	dir := t.TempDir()

	broken := filepath.Join(dir, "broken")
	must(t, os.MkdirAll(filepath.Join(broken, "cmd", "bad", ".ingot"), 0o755))
	must(t, os.WriteFile(filepath.Join(broken, "go.mod"), []byte("module broken\n\ngo 1.26\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(broken, "cmd", "bad", "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(broken, ".ingot"), 0o700))
	must(t, os.WriteFile(filepath.Join(broken, ".ingot", "token"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(broken, "ingot.yaml"), []byte("name: broken\nservices:\n  - name: bad\n    go: ./cmd/bad\n"), 0o644))
	brokenCfg, err := config.Load(filepath.Join(broken, "ingot.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  *config.Config
		opts []Option
		want string
	}{
		{"missing kernel", cfg, []Option{WithBuilderOptions(builder.WithKernelDeb(filepath.Join(dir, "nope.deb")))}, "nope.deb"},
		{"kernel is not a deb", cfg, []Option{WithBuilderOptions(builder.WithKernelDeb("../../go.mod"))}, "go.mod"},
		{"does not compile", brokenCfg, nil, "undefinedThing"},
	}
	for _, tt := range tests {
		out := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".img")
		opts := append([]Option{WithCacheDir(filepath.Join(dir, "cache"))}, tt.opts...)
		_, err := Image(context.Background(), tt.cfg, config.TargetVMAmd64, out, opts...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Image() error = %v, want one naming %q", tt.name, err, tt.want)
		}
		if _, statErr := os.Stat(out); statErr == nil {
			t.Errorf("%s: %s exists after a failed build", tt.name, out)
		}
		leftovers, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
		if len(leftovers) != 0 {
			t.Errorf("%s: temporary files left: %v", tt.name, leftovers)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
