package kmod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	notModule := filepath.Join(dir, "not-a-module.ko")
	if err := os.WriteFile(notModule, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.ko")
	errs := LoadAll([]string{missing, notModule})
	if len(errs) != 2 {
		t.Fatalf("LoadAll(missing, garbage) = %v, want 2 errors", errs)
	}
	for i, want := range []string{missing, notModule} {
		if !strings.Contains(errs[i].Error(), want) {
			t.Errorf("error %d = %v, want it to name %s", i, errs[i], want)
		}
	}
}
