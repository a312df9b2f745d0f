// Command boot measures how long the hello appliance takes from QEMU start
// to its first HTTP answer, through ingot's host-side loader (direct kernel
// boot) and through UEFI firmware and the image's systemd-boot, and, in the same run and on the same kernel and
// machine settings, the floor: QEMU start to power-off with a trivial init
// that powers off at once. Run it from the repository root:
// go run ./bench/boot [-accel tcg]
//
// It then searches for the smallest guest memory (-m, in steps of
// -mem-step MiB) with which hello still answers through the direct boot.
//
// Its last line is: RESULT boot ready_s=… uefi_ready_s=… floor_s=… ratio=… min_memory_mib=…
// (ratio is ready_s / floor_s).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/assemble"
	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/bootloader"
	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/packer/cpio"
	"github.com/ingotdev/ingot/packer/rootfs"
)

func main() {
	dir := flag.String("C", "examples/hello", "appliance directory")
	accelFlag := flag.String("accel", "tcg", "accelerator for both measurements: tcg, kvm or auto")
	runs := flag.Int("runs", 3, "boots per measurement; the median is reported")
	memStep := flag.Int("mem-step", 8, "resolution of the smallest-memory search, MiB (0: no search)")
	flag.Parse()
	if err := run(*dir, *accelFlag, *runs, *memStep); err != nil {
		fmt.Fprintln(os.Stderr, "bench/boot:", err)
		os.Exit(1)
	}
}

func run(dir, accelFlag string, runs, memStep int) error {
	ctx := context.Background()
	accel, err := qemu.ParseAccel(accelFlag)
	if err != nil {
		return err
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "ingot-bench-boot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	img := filepath.Join(tmp, "hello.img")
	if _, err := assemble.Image(ctx, cfg, config.TargetVMAmd64, img); err != nil {
		return err
	}
	var ready, uefiReady, floor []time.Duration
	for i := 0; i < runs; i++ {
		d, err := bootToHTTP(ctx, img, filepath.Join(tmp, "run"), accel, vm.FirmwareDirect, defaultMemoryMiB)
		if err != nil {
			return err
		}
		ready = append(ready, d)
		fmt.Printf("ready %d: %.2fs\n", i+1, d.Seconds())
	}
	for i := 0; i < runs; i++ {
		d, err := bootToHTTP(ctx, img, filepath.Join(tmp, "run-uefi"), accel, vm.FirmwareUEFI, defaultMemoryMiB)
		if err != nil {
			return err
		}
		uefiReady = append(uefiReady, d)
		fmt.Printf("uefi ready %d: %.2fs\n", i+1, d.Seconds())
	}
	kernelPath, err := extractKernel(img, filepath.Join(tmp, "boot"))
	if err != nil {
		return err
	}
	initrd, err := trivialInitramfs(ctx, tmp)
	if err != nil {
		return err
	}
	for i := 0; i < runs; i++ {
		d, err := bootToPoweroff(ctx, kernelPath, initrd, filepath.Join(tmp, "floor"), accel)
		if err != nil {
			return err
		}
		floor = append(floor, d)
		fmt.Printf("floor %d: %.2fs\n", i+1, d.Seconds())
	}
	minMiB := 0
	if memStep > 0 {
		if minMiB, err = smallestMemory(ctx, img, tmp, accel, memStep); err != nil {
			return err
		}
	}
	r, u, f := median(ready), median(uefiReady), median(floor)
	fmt.Printf("RESULT boot ready_s=%.2f uefi_ready_s=%.2f floor_s=%.2f ratio=%.2f min_memory_mib=%d\n", r.Seconds(), u.Seconds(), f.Seconds(), r.Seconds()/f.Seconds(), minMiB)
	return nil
}

// defaultMemoryMiB is the guest memory of the timed boots.
const defaultMemoryMiB = 512

// smallestMemory bisects between a guest too small for any Linux kernel
// and defaultMemoryMiB, in steps of step MiB, for the smallest memory
// with which hello answers: a guest that resets, panics, loops or stays
// silent for memoryBootLimit counts as not serving (ingot run stops on
// a reset loop by itself).
func smallestMemory(ctx context.Context, img, tmp string, accel qemu.Accel, step int) (int, error) {
	lo, hi := 32, defaultMemoryMiB // lo does not serve; hi does
	for hi-lo > step {
		mid := (lo + hi) / 2 / step * step
		if mid <= lo {
			mid = lo + step
		}
		ctx, cancel := context.WithTimeout(ctx, memoryBootLimit)
		d, err := bootToHTTP(ctx, img, filepath.Join(tmp, "run-mem"), accel, vm.FirmwareDirect, mid)
		cancel()
		if err != nil {
			fmt.Printf("memory %d MiB: does not serve: %v\n", mid, firstLine(err))
			lo = mid
			continue
		}
		fmt.Printf("memory %d MiB: serves after %.2fs\n", mid, d.Seconds())
		hi = mid
	}
	return hi, nil
}

// memoryBootLimit bounds one boot of the memory search.
const memoryBootLimit = 90 * time.Second

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// bootToHTTP boots the image with firmware (vm.Config.Firmware) and
// returns the time from start to the first HTTP 200 from the hello service.
func bootToHTTP(ctx context.Context, img, runDir string, accel qemu.Accel, firmware string, memoryMiB int) (time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- vm.Run(ctx, vm.Config{Image: img, RunDir: runDir, Accel: accel, MemoryMiB: memoryMiB,
			Forwards: []qemu.Forward{{Proto: "tcp", HostPort: port, GuestPort: 8080}}, Vsock: vm.VsockNone, Firmware: firmware})
	}()
	defer func() {
		cancel()
		<-done
	}()
	client := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for time.Since(start) < 3*time.Minute {
		if resp, err := client.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		select {
		case err := <-done:
			done <- err
			return 0, fmt.Errorf("VM stopped before hello answered: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("hello did not answer within 3 minutes")
}

// extractKernel copies the kernel from the image's boot partition.
func extractKernel(img, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := bootloader.Prepare(img, dir)
	if err != nil {
		return "", err
	}
	return b.Kernel, nil
}

const trivialInit = `package main

import "syscall"

func main() { syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF) }
`

// trivialInitramfs builds an initramfs whose /init powers off at once.
func trivialInitramfs(ctx context.Context, tmp string) (string, error) {
	src := filepath.Join(tmp, "trivial")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(trivialInit), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module trivial\n\ngo 1.26\n"), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(tmp, "trivial-init")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build trivial init: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	t := rootfs.New(0)
	if err := t.Add("/init", rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o755, Size: int64(len(data)), Content: rootfs.Bytes(data)}); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := cpio.WriteCompressedTree(&buf, t, cpio.Zstd); err != nil {
		return "", err
	}
	out := filepath.Join(tmp, "trivial.cpio.zst")
	return out, os.WriteFile(out, buf.Bytes(), 0o644)
}

// bootToPoweroff boots kernel+initrd and returns the time until QEMU exits.
func bootToPoweroff(ctx context.Context, kernel, initrd, runDir string, accel qemu.Accel) (time.Duration, error) {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return 0, err
	}
	m := &qemu.Machine{Arch: "amd64", MemoryMiB: 512, Kernel: kernel, Initrd: initrd,
		Cmdline: "console=ttyS0 panic=1", RunDir: runDir}
	start := time.Now()
	exit, _, err := qemu.Run(ctx, m, accel, nil)
	if err != nil {
		return 0, err
	}
	if exit != qemu.ExitPoweroff {
		return 0, fmt.Errorf("trivial init: guest %s, want poweroff", exit)
	}
	return time.Since(start), nil
}
