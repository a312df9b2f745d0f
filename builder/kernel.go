package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ingotdev/ingot/builder/config"
)

// kernelFileName is the file name the Makefile and scripts/fetch-kernel.sh
// give Debian's cloud kernel package for arch.
func kernelFileName(arch string) string { return "linux-image-cloud-" + arch + ".deb" }

// resolveKernel finds the kernel of target. For VM targets without a kernel:
// entry, the first of these that is set or exists wins:
//
//  1. WithKernelDeb(path) (a command-line flag);
//  2. kernel: in ingot.yaml;
//  3. $INGOT_KERNEL_DEB_<ARCH> (INGOT_KERNEL_DEB_AMD64, _ARM64), and for
//     amd64 also $INGOT_KERNEL_DEB (the test suite's variable);
//  4. $INGOT_KERNEL_DIR/linux-image-cloud-<arch>.deb;
//  5. <cache>/kernels/linux-image-cloud-<arch>.deb (the artifact cache);
//  6. the kernel pinned in the appliance's ingot.lock (or ingot's default
//     pin, then written there): <cache>/debs/<file>, downloaded from the
//     Debian archive and verified when missing (PinnedDeb);
//  7. only when 6 fails (offline): <ingot source>/.cache/kernels/
//     linux-image-cloud-<arch>.deb, which `make setup`
//     (scripts/fetch-kernel.sh) fills.
//
// A path given explicitly (1 to 3) must exist; 4 to 7 are tried in turn.
// Raspberry Pi targets default to the gokrazy kernel module.
func resolveKernel(ctx context.Context, cfg *config.Config, target config.Target, ingotDir string, o options) (config.KernelSource, error) {
	arch := target.Arch()
	explicit := func(path, how string) (config.KernelSource, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return config.KernelSource{}, fmt.Errorf("builder: kernel for %s (%s): %w", target, how, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return config.KernelSource{}, fmt.Errorf("builder: kernel for %s (%s): %w", target, how, err)
		}
		if !st.Mode().IsRegular() {
			return config.KernelSource{}, fmt.Errorf("builder: kernel for %s (%s): %s is not a file", target, how, abs)
		}
		return config.KernelSource{Kind: config.KernelDebian, Path: abs}, nil
	}
	if o.kernelDeb != "" {
		return explicit(o.kernelDeb, "WithKernelDeb")
	}
	if k, ok := cfg.Kernels[target]; ok {
		if k.Kind != config.KernelDebian {
			return k, nil
		}
		return explicit(k.Path, fmt.Sprintf("kernel.%s at %s", target, k.Pos))
	}
	if !target.IsVM() {
		return config.KernelSource{Kind: config.KernelGoModule, Module: "github.com/gokrazy/kernel.rpi"}, nil
	}
	vars := []string{"INGOT_KERNEL_DEB_" + strings.ToUpper(arch)}
	if arch == "amd64" {
		vars = append(vars, "INGOT_KERNEL_DEB")
	}
	for _, v := range vars {
		if p := o.getenv(v); p != "" {
			return explicit(p, "$"+v)
		}
	}
	var tried []string
	if d := o.getenv("INGOT_KERNEL_DIR"); d != "" {
		tried = append(tried, filepath.Join(d, kernelFileName(arch)))
	}
	tried = append(tried, filepath.Join(o.cacheDir, "kernels", kernelFileName(arch)))
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return explicit(p, "default")
		}
	}
	pinned, fetchErr := PinnedDeb(ctx, cfg.Dir, DebFetcher(o.cacheDir, o.debMirror, o.progress), KernelLockKey(arch))
	if fetchErr == nil {
		return explicit(pinned, "pinned in "+filepath.Join(cfg.Dir, "ingot.lock"))
	}
	if ingotDir != "" {
		p := filepath.Join(ingotDir, ".cache", "kernels", kernelFileName(arch))
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return explicit(p, "default")
		}
		tried = append(tried, p)
	}
	return config.KernelSource{}, fmt.Errorf("builder: no kernel for %s: %w; set kernel: {%s: debian:PATH.deb} in %s, or $%s, "+
		"or put Debian's %s (scripts/fetch-kernel.sh %s) at one of: %s",
		target, fetchErr, target, cfg.File, vars[0], strings.TrimSuffix(kernelFileName(arch), ".deb"), arch, strings.Join(tried, ", "))
}
