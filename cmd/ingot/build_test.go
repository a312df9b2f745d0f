package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/internal/vmtest"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// TestNewAndCert scaffolds an appliance: ingot new writes the token and a
// TLS certificate whose pin it prints; ingot cert keeps it unless forced.
func TestNewAndCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "app")
	var out, errs bytes.Buffer
	if err := runNew(context.Background(), &out, &errs, []string{dir}); err != nil {
		t.Fatalf("new: %v\n%s", err, errs.String())
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, config.DefaultTLSCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pin, err := certpin.OfPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), pin) {
		t.Errorf("new printed %q, want the certificate pin %s", out.String(), pin)
	}
	if st, err := os.Stat(filepath.Join(dir, config.DefaultTLSKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	// The token it writes is one the build accepts (issue 12, attack 10).
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := cfg.Token(); err != nil || len(tok) < config.MinTokenChars {
		t.Errorf("the token of ingot new: %v; want one the build accepts", err)
	}
	if st, err := os.Stat(cfg.TokenFile); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v; want 0600", st.Mode().Perm())
	}
	out.Reset()
	if err := runCert(context.Background(), &out, &errs, []string{"-C", dir}); err != nil || !strings.Contains(out.String(), pin) {
		t.Errorf("cert = %v, printed %q; want the same pin %s", err, out.String(), pin)
	}
	out.Reset()
	if err := runCert(context.Background(), &out, &errs, []string{"-C", dir, "-force"}); err != nil || strings.Contains(out.String(), pin) {
		t.Errorf("cert -force = %v, printed %q; want a new pin", err, out.String())
	}
}

// TestBuildAllTargets builds a copy of examples/hello for every target of
// its config (both VMs and the Raspberry Pi): one image per target, each
// named after its target.
func TestBuildAllTargets(t *testing.T) {
	amd64, arm64 := vmtest.Kernel(t, "amd64"), vmtest.Kernel(t, "arm64")
	repo, _ := filepath.Abs("../..")
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(repo, "examples/hello", config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	// The copy is its own module holding the example's service, which
	// uses only the standard library.
	y := string(cfg) + "kernel: {vm-amd64: \"debian:" + amd64 + "\", vm-arm64: \"debian:" + arm64 + "\"}\n"
	if !strings.Contains(y, "targets: [vm-amd64, vm-arm64, rpi]") {
		t.Fatalf("examples/hello/%s no longer lists the VM targets and rpi:\n%s", config.FileName, cfg)
	}
	if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{".ingot", "cmd"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(repo, "examples/hello", sub))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hellocopy\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	args := []string{"-C", dir, "-target", "all", "-q", "-cache", filepath.Join(t.TempDir(), "cache")}
	if err := runBuild(context.Background(), &out, &errs, args); err != nil {
		t.Fatalf("build %q: %v\n%s", args, err, errs.String())
	}
	lines := strings.Fields(out.String())
	want := []string{filepath.Join(dir, "hello-vm-amd64.img"), filepath.Join(dir, "hello-vm-arm64.img"), filepath.Join(dir, "hello-rpi.img")}
	if strings.Join(lines, " ") != strings.Join(want, " ") {
		t.Errorf("build -target all printed %q, want %q", lines, want)
	}
	for _, img := range want {
		if st, err := os.Stat(img); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", img, err)
		}
	}
	if err := runBuild(context.Background(), &out, &errs, []string{"-C", dir, "-target", "all", "-o", "x.img"}); err == nil || !strings.Contains(err.Error(), "-target all") {
		t.Errorf("build -target all -o = %v, want a usage error", err)
	}
}

// TestBuildFormats builds hello with -format given twice: the raw image
// and each copy beside it, printed in order; an unknown format and a
// format for a Pi image are refused before anything is built.
func TestBuildFormats(t *testing.T) {
	vmtest.Kernel(t, "amd64")
	dir := t.TempDir()
	img := filepath.Join(dir, "hello-vm-amd64.img")
	var out, errs bytes.Buffer
	args := []string{"-C", "../../examples/hello", "-target", "vm-amd64", "-o", img, "-format", "qcow2", "-format", "gce", "-q", "-cache", filepath.Join(dir, "cache")}
	if err := runBuild(context.Background(), &out, &errs, args); err != nil {
		t.Fatalf("build %q: %v\n%s", args, err, errs.String())
	}
	want := []string{img, filepath.Join(dir, "hello-vm-amd64.qcow2"), filepath.Join(dir, "hello-vm-amd64.tar.gz")}
	if got := strings.Fields(out.String()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("build -format qcow2 -format gce printed %q, want %q", got, want)
	}
	for _, p := range want {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
	err := runBuild(context.Background(), &out, &errs, []string{"-C", "../../examples/hello", "-format", "vdi"})
	if err == nil || !strings.Contains(err.Error(), `"vdi"`) {
		t.Errorf("build -format vdi = %v, want an error naming the format", err)
	}
	err = runBuild(context.Background(), &out, &errs, []string{"-C", "../../examples/hello", "-target", "rpi", "-o", filepath.Join(dir, "pi.img"), "-format", "vhd"})
	if err == nil || !strings.Contains(err.Error(), "disk format vhd is for VM images") {
		t.Errorf("build -target rpi -format vhd = %v, want it refused", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pi.img")); !os.IsNotExist(err) {
		t.Errorf("a refused Pi build left pi.img: %v", err)
	}
}
