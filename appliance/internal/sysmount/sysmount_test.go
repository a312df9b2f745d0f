package sysmount

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIsMountpoint(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/proc", true},
		{sub, false},
	} {
		got, err := IsMountpoint(tc.path)
		if err != nil || got != tc.want {
			t.Errorf("IsMountpoint(%s) = %v, %v, want %v", tc.path, got, err, tc.want)
		}
	}
	if _, err := IsMountpoint(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("IsMountpoint(missing) = nil error")
	}
}

func TestDoSkipsMounted(t *testing.T) {
	// /proc is mounted on any host running the tests: Do must not stack a
	// second proc on it.
	mounted, err := Do(Mount{Source: "proc", Target: "/proc", FSType: "proc"})
	if err != nil || mounted {
		t.Errorf("Do(/proc) = %v, %v, want false, nil", mounted, err)
	}
}
