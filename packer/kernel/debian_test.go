package kernel_test

import (
	"context"
	"debug/elf"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/kernel"
)

// These tests read the real Debian cloud kernels that .ci/run and the
// Makefile download (scripts/fetch-kernel.sh) and vmtest.Kernel finds.

func loadRealDeb(t *testing.T, arch string) *kernel.Kernel {
	t.Helper()
	p := vmtest.Kernel(t, arch)
	start := time.Now()
	k, err := kernel.LoadDeb(context.Background(), p, kernel.WithModules(kernel.DefaultVMModules()...))
	if err != nil {
		t.Fatalf("LoadDeb(%s) = %v", p, err)
	}
	t.Logf("LoadDeb(%s): %v, kernel %s, %d modules, %d built in", p, time.Since(start), k.Version, len(k.Modules), len(k.Builtin))
	return k
}

func TestDebianAMD64(t *testing.T) {
	k := loadRealDeb(t, "amd64")
	checkRealKernel(t, k, "amd64", elf.EM_X86_64)
	// A bzImage carries "HdrS" at 0x202 (the x86 boot protocol header).
	if len(k.Image) < 0x206 || string(k.Image[0x202:0x206]) != "HdrS" {
		t.Errorf("amd64 Image (%d bytes) lacks the bzImage HdrS signature", len(k.Image))
	}
}

func TestDebianARM64(t *testing.T) {
	k := loadRealDeb(t, "arm64")
	checkRealKernel(t, k, "arm64", elf.EM_AARCH64)
	// An arm64 Image carries "ARM\x64" at 0x38 (Documentation/arch/arm64/booting.rst).
	if len(k.Image) < 0x3c || string(k.Image[0x38:0x3c]) != "ARM\x64" {
		t.Errorf("arm64 Image (%d bytes) lacks the ARM\\x64 magic", len(k.Image))
	}
}

func checkRealKernel(t *testing.T, k *kernel.Kernel, arch string, machine elf.Machine) {
	t.Helper()
	if k.Arch != arch || !strings.HasSuffix(k.Version, "-"+arch) {
		t.Errorf("kernel version %q arch %q, want a %s kernel", k.Version, k.Arch, arch)
	}
	// The initramfs the packer writes is zstd or gzip compressed.
	for _, opt := range []string{"CONFIG_RD_ZSTD=y", "CONFIG_RD_GZIP=y", "CONFIG_SQUASHFS=m", "CONFIG_VIRTIO_VSOCKETS=m"} {
		if !strings.Contains(string(k.Config), "\n"+opt+"\n") {
			t.Errorf("kernel config lacks %s", opt)
		}
	}
	if len(k.Modules) < 500 || len(k.Builtin) == 0 {
		t.Errorf("%d modules, %d built in; want a full module tree", len(k.Modules), len(k.Builtin))
	}
	mods, err := k.Closure(kernel.DefaultVMModules()...)
	if err != nil {
		t.Fatalf("Closure(DefaultVMModules()) = %v", err)
	}
	pos := map[string]int{}
	var names []string
	for i, m := range mods {
		pos[m.Name] = i
		names = append(names, m.Name)
	}
	t.Logf("Closure(DefaultVMModules()) = %s", strings.Join(names, " "))
	for _, want := range kernel.DefaultVMModules() {
		if _, ok := pos[want]; !ok && !k.Builtin[want] {
			t.Errorf("closure lacks %s, which is not built in either", want)
		}
	}
	for _, order := range [][]string{
		{"virtio_ring", "virtio", "virtio_pci"},
		{"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"},
		{"fat", "vfat"},
		{"watchdog", "softdog"},
	} {
		for i := 1; i < len(order); i++ {
			a, aok := pos[order[i-1]]
			b, bok := pos[order[i]]
			if !aok || !bok || a >= b {
				t.Errorf("closure order: %s (at %d, %v) must precede %s (at %d, %v)", order[i-1], a, aok, order[i], b, bok)
			}
		}
	}
	kept := 0
	for _, m := range k.Modules {
		if m.Data != nil {
			kept++
		}
	}
	if kept != len(mods) {
		t.Errorf("WithModules kept data of %d modules, want the %d of the closure", kept, len(mods))
	}
	for _, m := range mods {
		for _, d := range m.Depends {
			if p, ok := pos[d]; ok && p >= pos[m.Name] {
				t.Errorf("closure order: %s loads after %s, which depends on it", d, m.Name)
			}
		}
		mach, name, err := kernel.ModinfoOf(m.Data)
		if err != nil || mach != machine || name != m.Name {
			t.Errorf("module %s (%s): modinfo machine %v, name %q, %v; want a %v module named %s", m.Name, m.Path, mach, name, err, machine, m.Name)
		}
		if !strings.HasPrefix(m.Path, "kernel/") || !strings.HasSuffix(m.Path, ".ko") {
			t.Errorf("module %s: Path %q, want kernel/...ko", m.Name, m.Path)
		}
	}
}

// TestDebianCloudModules: every module CloudVMModules names for an arch
// is in that arch's Debian cloud kernel, with its dependencies.
func TestDebianCloudModules(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		p := vmtest.Kernel(t, arch)
		want := append(kernel.DefaultVMModules(), kernel.CloudVMModules(arch)...)
		k, err := kernel.LoadDeb(context.Background(), p, kernel.WithModules(want...))
		if err != nil {
			t.Fatalf("LoadDeb(%s) with the cloud modules = %v", p, err)
		}
		mods, err := k.Closure(want...)
		if err != nil {
			t.Fatalf("%s: Closure(cloud modules) = %v", arch, err)
		}
		t.Logf("%s: %d modules with the cloud drivers", arch, len(mods))
	}
}
