// Command boot measures how long the hello appliance takes from QEMU start
// to its first HTTP answer, through ingot's host-side loader (direct kernel
// boot) and through UEFI firmware and the image's systemd-boot, and, in the same run and on the same kernel and
// machine settings, the floor: QEMU start to power-off with a trivial init
// that powers off at once. Run it from the repository root:
// go run ./bench/boot [-accel tcg]
//
// Its last line is: RESULT boot ready_s=… uefi_ready_s=… floor_s=… ratio=…
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
	flag.Parse()
	if err := run(*dir, *accelFlag, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/boot:", err)
		os.Exit(1)
	}
}

func run(dir, accelFlag string, runs int) error {
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
		d, err := bootToHTTP(ctx, img, filepath.Join(tmp, "run"), accel, vm.FirmwareDirect)
		if err != nil {
			return err
		}
		ready = append(ready, d)
		fmt.Printf("ready %d: %.2fs\n", i+1, d.Seconds())
	}
	for i := 0; i < runs; i++ {
		d, err := bootToHTTP(ctx, img, filepath.Join(tmp, "run-uefi"), accel, vm.FirmwareUEFI)
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
	r, u, f := median(ready), median(uefiReady), median(floor)
	fmt.Printf("RESULT boot ready_s=%.2f uefi_ready_s=%.2f floor_s=%.2f ratio=%.2f\n", r.Seconds(), u.Seconds(), f.Seconds(), r.Seconds()/f.Seconds())
	return nil
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
func bootToHTTP(ctx context.Context, img, runDir string, accel qemu.Accel, firmware string) (time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- vm.Run(ctx, vm.Config{Image: img, RunDir: runDir, Accel: accel, MemoryMiB: 512,
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
