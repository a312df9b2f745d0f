package builder

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"path/filepath"
	"testing"

	"github.com/ingotdev/ingot/builder/config"
)

// TestBuildExampleHello builds the real hello example with the real
// ingot-init, found through the module of examples/hello (this repository).
func TestBuildExampleHello(t *testing.T) {
	cfg, err := config.Load(filepath.Join("..", "examples", "hello", "ingot.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cfg.TokenFile = filepath.Join(tmp, "token")
	kernel := filepath.Join(tmp, "kernel.deb")
	if err := os.WriteFile(cfg.TokenFile, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		target  config.Target
		machine elf.Machine
	}{
		{config.TargetVMAmd64, elf.EM_X86_64},
		{config.TargetVMArm64, elf.EM_AARCH64},
	} {
		r, err := Build(context.Background(), cfg, tt.target, WithCacheDir(filepath.Join(tmp, "cache")), WithKernelDeb(kernel))
		if err != nil {
			t.Fatalf("Build(examples/hello, %s) = %v", tt.target, err)
		}
		for p, wantPath := range map[string]string{"/init": InitPackage, "/usr/bin/hello": "github.com/ingotdev/ingot/examples/hello/cmd/hello"} {
			data := readEntry(t, r.Root, p)
			if got := elfMachine(t, data); got != tt.machine {
				t.Errorf("Build(%s): %s ELF machine = %v, want %v", tt.target, p, got, tt.machine)
			}
			bi, err := buildinfo.Read(bytes.NewReader(data))
			if err != nil || bi.Path != wantPath {
				t.Errorf("Build(%s): %s is %v (%v), want %s", tt.target, p, bi, err, wantPath)
			}
		}
		if r.Appliance.Services[0].Args[1] != ":8080" || r.Appliance.Services[0].Env["GREETING"] != "hello from ingot" {
			t.Errorf("Build(%s): appliance services = %+v", tt.target, r.Appliance.Services)
		}
	}
}
