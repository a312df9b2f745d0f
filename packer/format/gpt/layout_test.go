package gpt

import "testing"

func TestLayout(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		disk  int64
		sizes []int64
		want  []Extent
	}{
		{"aligned", 64 * mib, []int64{8 * mib, 16 * mib}, []Extent{{2048, 2048 + 16384 - 1}, {9 * 2048, 9*2048 + 32768 - 1}}},
		{"unaligned sizes", 64 * mib, []int64{1000, 1}, []Extent{{2048, 2049}, {4096, 4096}}},
		{"fill", 64 * mib, []int64{8 * mib, 0}, []Extent{{2048, 2048 + 16384 - 1}, {9 * 2048, 64*2048 - 34}}},
		{"exact fit", 10 * mib, []int64{8 * mib, 0}, []Extent{{2048, 2048 + 16384 - 1}, {9 * 2048, 10*2048 - 34}}},
	} {
		got, err := Layout(tc.disk, tc.sizes...)
		if err != nil {
			t.Errorf("%s: Layout(%d, %v) = %v", tc.name, tc.disk, tc.sizes, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: Layout(%d, %v) = %v, want %v", tc.name, tc.disk, tc.sizes, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: Layout(%d, %v) = %v, want %v", tc.name, tc.disk, tc.sizes, got, tc.want)
			}
		}
	}
	for _, tc := range []struct {
		disk  int64
		sizes []int64
	}{
		{64 * mib, []int64{0, 8 * mib}},
		{64 * mib, []int64{-1}},
		{64 * mib, []int64{63 * mib}},
		{9 * mib, []int64{8 * mib, 0}},
		{1000, []int64{1}},
	} {
		if got, err := Layout(tc.disk, tc.sizes...); err == nil {
			t.Errorf("Layout(%d, %v) = %v, want error", tc.disk, tc.sizes, got)
		}
	}
}

func TestDiskBytes(t *testing.T) {
	const mib = 1 << 20
	for _, sizes := range [][]int64{{8 * mib}, {8 * mib, 16 * mib, 16 * mib, 4 * mib}, {1, 1, 1}, {mib - 512}, {5*mib + 7}} {
		d := DiskBytes(sizes...)
		if d%mib != 0 {
			t.Errorf("DiskBytes(%v) = %d, not whole MiB", sizes, d)
		}
		if _, err := Layout(d, sizes...); err != nil {
			t.Errorf("Layout(DiskBytes(%v) = %d) = %v", sizes, d, err)
		}
		if _, err := Layout(d-mib, sizes...); err == nil {
			t.Errorf("Layout(DiskBytes(%v)-1MiB) fits; DiskBytes is not minimal", sizes)
		}
	}
	if got, want := DiskBytes(8*mib, 16*mib, 16*mib, 4*mib), int64(46*mib); got != want {
		t.Errorf("DiskBytes(8,16,16,4 MiB) = %d, want %d", got, want)
	}
}
