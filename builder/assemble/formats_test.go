package assemble

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/builder/debfetch"
	"github.com/ingotdev/ingot/packer/vdisk"
)

// TestImageFormats builds hello in every disk format twice: each copy is
// byte-identical across the builds, and qemu-img finds it clean and equal
// to the raw image (GCE's disk.raw is compared by package vdisk's tests).
func TestImageFormats(t *testing.T) {
	cfg := helloConfig(t)
	dir := t.TempDir()
	all := []vdisk.Format{vdisk.QCOW2, vdisk.VHD, vdisk.VMDK, vdisk.GCE}
	var reps []*Report
	for _, sub := range []string{"a", "b"} {
		out := filepath.Join(dir, sub, "hello-vm-amd64.img")
		must(t, os.MkdirAll(filepath.Dir(out), 0o755))
		rep, err := Image(t.Context(), cfg, config.TargetVMAmd64, out, WithCacheDir(filepath.Join(dir, "cache")), WithFormats(all...))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Disks) != len(all) {
			t.Fatalf("report lists disks %v, want one per format of %v", rep.Disks, all)
		}
		reps = append(reps, rep)
	}
	qemuName := map[vdisk.Format]string{vdisk.QCOW2: "qcow2", vdisk.VHD: "vpc", vdisk.VMDK: "vmdk"}
	for i, f := range all {
		a, b := reps[0].Disks[i], reps[1].Disks[i]
		if want := filepath.Join(dir, "a", "hello-vm-amd64"+f.Ext()); a != want {
			t.Errorf("%s written to %s, want %s", f, a, want)
		}
		if fileSHA(t, a) != fileSHA(t, b) {
			t.Errorf("%s: two builds differ", f)
		}
		q, ok := qemuName[f]
		if !ok {
			continue
		}
		if f != vdisk.VHD {
			qemuImg(t, "check", "-f", q, a)
		}
		qemuImg(t, "compare", "-f", "raw", reps[0].Image, "-F", q, a)
		st, err := os.Stat(a)
		must(t, err)
		t.Logf("%s: %d bytes (raw image %d)", f, st.Size(), reps[0].ImageBytes)
	}
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestImageFetchesPinnedKernel builds hello as a user who installed ingot
// with go install: no INGOT_KERNEL_DEB*, an empty cache, no kernel from
// scripts/fetch-kernel.sh. The build downloads the kernel that
// examples/hello/ingot.lock pins from the Debian archive, verifies it, and
// the image is the one a build from the setup script's kernel makes.
func TestImageFetchesPinnedKernel(t *testing.T) {
	reference := helloConfig(t) // before the variables are cleared
	for _, v := range []string{"INGOT_KERNEL_DEB", "INGOT_KERNEL_DEB_AMD64", "INGOT_KERNEL_DEB_ARM64", "INGOT_KERNEL_DIR"} {
		t.Setenv(v, "")
	}
	lockBefore, err := os.ReadFile("../../examples/hello/ingot.lock")
	must(t, err)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "hello.img")
	rep, err := Image(t.Context(), reference, config.TargetVMAmd64, out, WithCacheDir(cache))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(lockBefore), "\n") {
		if strings.HasPrefix(l, "deb:linux-image-cloud-amd64 ") {
			line = l
		}
	}
	pin, err := debfetch.ParsePin(strings.TrimPrefix(line, "deb:linux-image-cloud-amd64 "))
	if err != nil {
		t.Fatalf("examples/hello/ingot.lock: %v", err)
	}
	// The kernel is taken from the download only when the download
	// succeeded and was verified; only then is it in the cache.
	fetched := filepath.Join(cache, "debs", pin.FileName())
	if _, err := os.Stat(fetched); err != nil {
		t.Fatalf("the pinned kernel is not in the empty cache after the build: %v", err)
	}
	if got := fileSHA(t, fetched); hex.EncodeToString(got[:]) != pin.SHA256 {
		t.Errorf("cached %s has sha256 %x, the pin says %s", fetched, got, pin.SHA256)
	}
	lockAfter, err := os.ReadFile("../../examples/hello/ingot.lock")
	must(t, err)
	if !bytes.Equal(lockBefore, lockAfter) {
		t.Errorf("the build changed examples/hello/ingot.lock:\n%s", lockAfter)
	}
	t.Logf("built %s (%s) with %s", rep.Image, rep.BuildID, pin.FileName())
}
