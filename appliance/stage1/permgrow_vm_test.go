package stage1

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	ingotconfig "github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/gpt"
)

// resizedBytes is the disk the perm-growth tests resize the image to, as
// a cloud disk is larger than the image written to it.
const resizedBytes = 4 << 30

var (
	permGrowingRE = regexp.MustCompile(`init: perm: growing ext4 on /dev/vda4 from (\d+) to (\d+) MiB`)
	permGrownRE   = regexp.MustCompile(`init: perm: grown to (\d+) MiB`)
)

// buildSupervision builds examples/supervision (its counter keeps a count
// on /perm) into dir.
func buildSupervision(t *testing.T, dir string) string {
	t.Helper()
	cfg := supervisionConfig(t)
	img := filepath.Join(dir, "supervision.img")
	if _, err := assemble.Image(t.Context(), cfg, ingotconfig.TargetVMAmd64, img, assemble.WithCacheDir(filepath.Join(dir, "cache"))); err != nil {
		t.Fatal(err)
	}
	return img
}

// resize grows the image file as `qemu-img resize` does a VM disk.
func resize(t *testing.T, img string, size int64) {
	t.Helper()
	if out, err := exec.Command("qemu-img", "resize", "-f", "raw", img, strconv.FormatInt(size, 10)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img resize: %v\n%s", err, out)
	}
}

// checkPermFills checks, from the host on a powered-off image, that perm
// ends where the disk's backup GPT begins, that its ext4 filesystem spans
// the partition, and that e2fsck finds it clean. sfdisk reads the table.
// It returns the filesystem's size.
func checkPermFills(t *testing.T, img string) int64 {
	t.Helper()
	p := permPartition(t, img)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(st.Size()/gpt.SectorBytes) - 34; p.LastLBA != want {
		t.Errorf("perm ends at LBA %d, want %d (the disk's last usable sector)", p.LastLBA, want)
	}
	if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
	part := sparsePartition(t, img, p)
	sb := make([]byte, 1024)
	f, err := os.Open(part)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	fsBytes := int64(binary.LittleEndian.Uint32(sb[4:])) * (1024 << binary.LittleEndian.Uint32(sb[0x18:]))
	if fsBytes > p.SizeBytes() || p.SizeBytes()-fsBytes >= 4096 {
		t.Errorf("perm's ext4 is %d bytes, its partition %d: want the filesystem to fill it", fsBytes, p.SizeBytes())
	}
	if out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on the grown perm: %v\n%s", err, out)
	}
	t.Logf("perm: partition %d MiB, ext4 %d MiB, on a disk of %d MiB", p.SizeBytes()>>20, fsBytes>>20, st.Size()>>20)
	return fsBytes
}

// sparsePartition copies a partition out of img into a sparse file,
// skipping all-zero MiB, so a 4 GiB perm costs only what it holds.
func sparsePartition(t *testing.T, img string, p gpt.Partition) string {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(t.TempDir(), "perm.ext4")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < p.SizeBytes(); off += int64(len(buf)) {
		n := min(int64(len(buf)), p.SizeBytes()-off)
		if _, err := in.ReadAt(buf[:n], p.OffsetBytes()+off); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(buf[:n], zero[:n]) {
			continue
		}
		if _, err := out.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Truncate(p.SizeBytes()); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestVMPermGrowsToDisk boots examples/supervision on a disk resized to
// 4 GiB: the first boot grows the GPT and perm to the disk, the counter
// keeps its count on the grown perm, the next boot finds it intact and
// grows nothing, and from the host perm fills the disk and is clean.
func TestVMPermGrowsToDisk(t *testing.T) {
	dir := t.TempDir()
	img := buildSupervision(t, dir)
	resize(t, img, resizedBytes)

	vm1 := startPipelineVM(t, img, filepath.Join(dir, "run1"))
	grown := vm1.waitFor(permGrownRE, pipelineBootTimeout)
	vm1.waitFor(counterStartRE, time.Minute)
	vm1.waitFor(counterStoredRE, time.Minute)
	vm1.web()
	log1 := vm1.stop()
	expectLines(t, "boot 1", log1, "init: perm: partition 4 of /dev/vda now ends at the disk's end", "init: perm: growing ext4 on /dev/vda4", "init: perm: unmounted")
	stop1 := counterStopRE.FindStringSubmatch(log1)
	if stop1 == nil || stop1[1] == "0" {
		t.Fatalf("boot 1: the counter stopped at %v, want a count written on the grown perm", stop1)
	}
	if fsBytes := checkPermFills(t, img); grown[1] != strconv.FormatInt(fsBytes>>20, 10) {
		t.Errorf("boot 1 said perm grew to %s MiB; the host sees %d MiB", grown[1], fsBytes>>20)
	}

	vm2 := startPipelineVM(t, img, filepath.Join(dir, "run2"))
	start2 := vm2.waitFor(counterStartRE, pipelineBootTimeout)
	if start2[1] != stop1[1] {
		t.Errorf("boot 2: counter resumed at %s, want %s, where boot 1 stopped it", start2[1], stop1[1])
	}
	log2 := vm2.stop()
	if strings.Contains(log2, "init: perm: growing") || strings.Contains(log2, "now ends at the disk's end") || strings.Contains(log2, "perm: grow:") {
		t.Errorf("boot 2 grew perm again or failed to:\n%s", tail(log2))
	}
	checkPermFills(t, img)
}

// permCutDelays are the kill points of TestVMPermGrowPowerCut, after the
// console said ext4 started growing: at once, within the resize (it took
// about 80 ms of a TCG guest here) and after it.
var permCutDelays = []time.Duration{0, 25 * time.Millisecond, 50 * time.Millisecond, 150 * time.Millisecond}

// TestVMPermGrowPowerCut writes a count on perm at the image's size, then,
// for each kill point, resizes a copy of that disk to 4 GiB and kills
// QEMU during the first boot's growth of ext4: the next boot must come up,
// finish the growth, and find the count intact. (Cuts between the GPT's
// writes are gpt.TestGrowPowerCut's.)
func TestVMPermGrowPowerCut(t *testing.T) {
	dir := t.TempDir()
	base := buildSupervision(t, dir)

	vm1 := startPipelineVM(t, base, filepath.Join(dir, "run1"))
	vm1.waitFor(counterStartRE, pipelineBootTimeout)
	vm1.web()
	log1 := vm1.stop()
	stop1 := counterStopRE.FindStringSubmatch(log1)
	if stop1 == nil || stop1[1] == "0" {
		t.Fatalf("boot 1: the counter stopped at %v, want a count on perm", stop1)
	}
	if strings.Contains(log1, "perm: growing") {
		t.Fatalf("boot 1 grew perm on a disk of the image's size:\n%s", tail(log1))
	}

	for i, delay := range permCutDelays {
		t.Run(delay.String(), func(t *testing.T) {
			img := filepath.Join(dir, "cut"+strconv.Itoa(i)+".img")
			if out, err := exec.Command("cp", "--sparse=always", base, img).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v\n%s", err, out)
			}
			resize(t, img, resizedBytes)
			runDir := filepath.Join(dir, "cut"+strconv.Itoa(i)+"-run")
			vm2 := startPipelineVM(t, img, runDir)
			deadline := time.Now().Add(pipelineBootTimeout)
			for !permGrowingRE.MatchString(vm2.console.String()) {
				if time.Now().After(deadline) {
					t.Fatalf("the boot on the resized disk did not start growing perm within %v", pipelineBootTimeout)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(delay)
			pid, err := killQEMU(runDir, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			<-vm2.done
			vm2.stopped = true
			t.Logf("killed QEMU (pid %d) %v after the console said ext4 was growing; growth had finished: %v",
				pid, delay, permGrownRE.MatchString(vm2.console.String()))

			vm3 := startPipelineVM(t, img, runDir+"-next")
			start3 := vm3.waitFor(counterStartRE, pipelineBootTimeout)
			if start3[1] != stop1[1] {
				t.Errorf("next boot: counter resumed at %s, want %s, written before the cut", start3[1], stop1[1])
			}
			vm3.web()
			log3 := vm3.stop()
			for _, l := range strings.Split(log3, "\n") {
				if strings.Contains(l, "init: perm:") || strings.Contains(l, "EXT4-fs (vda4)") {
					t.Logf("next boot: %s", strings.TrimSpace(l))
				}
			}
			if strings.Contains(log3, "perm: grow:") || strings.Contains(log3, "warning: perm") {
				t.Errorf("the next boot warned about perm:\n%s", tail(log3))
			}
			checkPermFills(t, img)
		})
	}
}

// killQEMU SIGKILLs the qemu-system process whose command line names
// runDir (unique to one VM), as a power cut stops the machine.
func killQEMU(runDir string, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			args := bytes.Split(b, []byte{0})
			if !bytes.Contains(args[0], []byte("qemu-system")) || !bytes.Contains(b, []byte(runDir)) {
				continue
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return pid, err
			}
			return pid, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, errors.New("no qemu-system process for " + runDir)
}
