package fat

import (
	"strings"
	"testing"
)

func TestClusterSize(t *testing.T) {
	if MinSizeBytes != 34089472 {
		t.Errorf("MinSizeBytes = %d, want 34089472", MinSizeBytes)
	}
	for _, tc := range []struct {
		size         int64
		clusterBytes int
		want         int64
	}{
		{MinSizeBytes, 0, 512},
		{64 << 20, 0, 512},
		{100 << 20, 0, 1024},
		{256 << 20, 0, 2048},
		{300 << 20, 0, 4096},
		{8 << 30, 0, 4096},
		{1 << 30, 8192, 8192},
		{64 << 20, 512, 512},
	} {
		g, err := PlanGeometry(tc.size, Options{clusterBytes: tc.clusterBytes})
		if err != nil {
			t.Errorf("planGeometry(%d, %d) = %v", tc.size, tc.clusterBytes, err)
			continue
		}
		if g.ClusterBytes() != tc.want {
			t.Errorf("planGeometry(%d, %d) cluster = %d bytes, want %d", tc.size, tc.clusterBytes, g.ClusterBytes(), tc.want)
		}
		if g.ClusterCount < minClusters || g.dataStartBytes()%g.ClusterBytes() != 0 ||
			g.dataStartBytes()+int64(g.ClusterCount)*g.ClusterBytes() > tc.size {
			t.Errorf("planGeometry(%d, %d) = %+v: bad layout", tc.size, tc.clusterBytes, g)
		}
	}
	for _, tc := range []struct {
		size         int64
		clusterBytes int
		want         string
	}{
		{MinSizeBytes - 512, 0, "too small for FAT32"},
		{32 << 20, 0, "too small for FAT32"},
		{64 << 20, 1024, "needs at least 65525"},
		{64 << 20, 3000, "power of two"},
		{64 << 20, 65536, "power of two"},
	} {
		if _, err := PlanGeometry(tc.size, Options{clusterBytes: tc.clusterBytes}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("planGeometry(%d, %d) = %v, want error containing %q", tc.size, tc.clusterBytes, err, tc.want)
		}
	}
}
