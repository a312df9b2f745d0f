package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSquashfs(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc/hostname"), []byte("ingot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{"zstd", "gzip", "none"} {
		out := filepath.Join(t.TempDir(), "root.sqfs")
		var stdout, stderr bytes.Buffer
		args := []string{"-comp", comp, "-block-size", "65536", src, out}
		if err := runSquashfs(context.Background(), &stdout, &stderr, args); err != nil {
			t.Fatalf("runSquashfs(%q) = %v; stderr %s", args, err, stderr.String())
		}
		got, err := exec.Command("unsquashfs", "-cat", out, "etc/hostname").CombinedOutput()
		if err != nil || string(got) != "ingot\n" {
			t.Errorf("unsquashfs -cat etc/hostname of the %s image = %q, %v, want %q", comp, got, err, "ingot\n")
		}
	}
}

func TestSquashfsUsage(t *testing.T) {
	src := t.TempDir()
	out := filepath.Join(t.TempDir(), "x.sqfs")
	for _, args := range [][]string{
		{src},
		{"-comp", "lz4", src, out},
		{"-level", "x", src, out},
	} {
		var stdout, stderr bytes.Buffer
		err := runSquashfs(context.Background(), &stdout, &stderr, args)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("runSquashfs(%q) = %v, want a usage error", args, err)
		}
	}
	// Bad options the library rejects, and a missing source, leave no
	// output behind.
	for _, args := range [][]string{
		{"-block-size", "1000", src, out},
		{filepath.Join(src, "missing"), out},
	} {
		var stdout, stderr bytes.Buffer
		if err := runSquashfs(context.Background(), &stdout, &stderr, args); err == nil {
			t.Errorf("runSquashfs(%q) = nil, want an error", args)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runSquashfs(%q) left %s behind (%v)", args, out, err)
		}
	}
	if !strings.Contains(squashfsUsage, "SRC_DIR OUT") {
		t.Errorf("usage %q does not name the arguments", squashfsUsage)
	}
}
