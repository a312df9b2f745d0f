package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostUsage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("meminfo", "MemTotal:         505236 kB\nMemFree:          400000 kB\nMemAvailable:     450100 kB\n")
	write("loadavg", "0.52 0.31 0.07 1/80 312\n")
	if err := os.Mkdir(filepath.Join(dir, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("self/status", "Name:\tingot-init\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n")
	h := HostUsage(dir)
	if h.Error != "" || h.MemTotalBytes != 505236<<10 || h.MemAvailableBytes != 450100<<10 || h.Load != [3]float64{0.52, 0.31, 0.07} || h.InitRSSBytes != 12345<<10 {
		t.Errorf("HostUsage = %+v", h)
	}
	write("meminfo", "MemTotal: lots kB\nMemAvailable: 1 kB\n")
	write("loadavg", "0.5\n")
	write("self/status", "Name:\tingot-init\nVmRSS:\t12 MB\n")
	h = HostUsage(dir)
	for _, want := range []string{"meminfo: MemTotal", "loadavg: \"0.5\"", "self/status: VmRSS: \"12 MB\""} {
		if !strings.Contains(h.Error, want) {
			t.Errorf("HostUsage error %q does not name %s", h.Error, want)
		}
	}
	write("self/status", "Name:\tkthreadd\n") // kernel threads have no VmRSS
	if h := HostUsage(dir); !strings.Contains(h.Error, "self/status: no VmRSS line") || h.InitRSSBytes != 0 {
		t.Errorf("HostUsage without VmRSS: %+v", h)
	}
	if h := HostUsage(filepath.Join(dir, "none")); !strings.Contains(h.Error, "meminfo") {
		t.Errorf("HostUsage without /proc: error %q", h.Error)
	}
}
