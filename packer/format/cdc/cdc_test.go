package cdc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"
	"testing/iotest"
)

// randomBytes returns n bytes from a seeded generator.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

type chunk struct {
	off  int64
	size int
	sum  [32]byte
}

func split(t *testing.T, r io.Reader) []chunk {
	t.Helper()
	var cs []chunk
	err := Split(context.Background(), r, func(off int64, data []byte) error {
		cs = append(cs, chunk{off, len(data), sha256.Sum256(data)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestSplitBounds: chunks are contiguous, cover the input, and lie within
// MinSize..MaxSize except the last, which may be short; the mean is near
// AvgSize.
func TestSplitBounds(t *testing.T) {
	data := randomBytes(32<<20, 1)
	// A run of zeros never satisfies the cut condition before MaxSize.
	copy(data[5<<20:], make([]byte, 3<<20))
	cs := split(t, bytes.NewReader(data))
	var off int64
	maxed := 0
	for i, c := range cs {
		if c.off != off {
			t.Fatalf("chunk %d at offset %d, want %d", i, c.off, off)
		}
		if c.size > MaxSize || c.size <= 0 || (c.size < MinSize && i != len(cs)-1) {
			t.Errorf("chunk %d of %d: %d bytes, outside %d..%d", i, len(cs), c.size, MinSize, MaxSize)
		}
		if c.sum != sha256.Sum256(data[off:off+int64(c.size)]) {
			t.Fatalf("chunk %d: bytes differ from the input's", i)
		}
		if c.size == MaxSize {
			maxed++
		}
		off += int64(c.size)
	}
	if off != int64(len(data)) {
		t.Fatalf("chunks cover %d of %d bytes", off, len(data))
	}
	if maxed < 12 {
		t.Errorf("only %d chunks of MaxSize: 3 MiB of zeros should give at least 12", maxed)
	}
	random := len(data) - 3<<20
	mean := random / (len(cs) - maxed)
	t.Logf("%d chunks, %d of MaxSize, mean over random data %d bytes", len(cs), maxed, mean)
	if mean < AvgSize/2 || mean > 2*AvgSize {
		t.Errorf("mean chunk size over random data %d, want about %d", mean, AvgSize)
	}
}

// TestSplitDeterministic: the same bytes give the same chunks however the
// reader hands them out.
func TestSplitDeterministic(t *testing.T) {
	data := randomBytes(3<<20+12345, 2)
	a := split(t, bytes.NewReader(data))
	b := split(t, iotest.OneByteReader(bytes.NewReader(data)))
	c := split(t, iotest.HalfReader(bytes.NewReader(data)))
	if len(a) < 10 {
		t.Fatalf("%d chunks of %d bytes", len(a), len(data))
	}
	for _, other := range [][]chunk{b, c} {
		if len(other) != len(a) {
			t.Fatalf("%d chunks, then %d", len(a), len(other))
		}
		for i := range a {
			if a[i] != other[i] {
				t.Fatalf("chunk %d: %+v, then %+v", i, a[i], other[i])
			}
		}
	}
}

// TestGearTablePinned pins the rule: a change of the gear table, masks or
// sizes changes where chunks are cut, which must come with a new Name.
func TestGearTablePinned(t *testing.T) {
	g := gearTable()
	if g[0] == g[1] || g[0] == 0 {
		t.Fatalf("gear table %x %x", g[0], g[1])
	}
	// Input from SHA-256 in counter mode, fixed forever like the rule.
	var in []byte
	for i := 0; len(in) < 1<<20; i++ {
		sum := sha256.Sum256([]byte("cdc pinned input " + strconv.Itoa(i)))
		in = append(in, sum[:]...)
	}
	cs := split(t, bytes.NewReader(in))
	var sizes []int
	for _, c := range cs {
		sizes = append(sizes, c.size)
	}
	want := []int{79226, 69610, 66770, 43483, 22722, 70642, 80841, 83656, 126442, 65714, 67354, 75710, 53082, 67016, 56127, 20181}
	if len(sizes) != len(want) {
		t.Fatalf("chunk sizes %v, pinned %v (a changed rule needs a new Name)", sizes, want)
	}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("chunk sizes %v, pinned %v (a changed rule needs a new Name)", sizes, want)
		}
	}
}

// TestSplitInsertion: a few bytes inserted in the middle of 8 MiB change
// only the chunks around them.
func TestSplitInsertion(t *testing.T) {
	data := randomBytes(8<<20, 3)
	mid := len(data)/2 + 777
	changed := append(append(append([]byte{}, data[:mid]...), "a few bytes"...), data[mid:]...)
	a, b := split(t, bytes.NewReader(data)), split(t, bytes.NewReader(changed))
	have := map[[32]byte]bool{}
	for _, c := range a {
		have[c.sum] = true
	}
	var newBytes, shared int
	for _, c := range b {
		if have[c.sum] {
			shared++
		} else {
			newBytes += c.size
		}
	}
	t.Logf("%d chunks before, %d after, %d shared, %d new bytes", len(a), len(b), shared, newBytes)
	if shared < len(b)-2 || newBytes > 2*MaxSize {
		t.Errorf("%d of %d chunks shared, %d new bytes: the insertion should change one or two chunks", shared, len(b), newBytes)
	}
}

func TestSplitEmpty(t *testing.T) {
	if cs := split(t, bytes.NewReader(nil)); len(cs) != 0 {
		t.Errorf("empty input: %d chunks", len(cs))
	}
	if cs := split(t, bytes.NewReader([]byte("x"))); len(cs) != 1 || cs[0].size != 1 {
		t.Errorf("one byte: %+v", cs)
	}
}

// TestSplitErrors: an error of the reader (with its offset) or of fn, and
// a cancelled context, stop Split.
func TestSplitErrors(t *testing.T) {
	data := randomBytes(2<<20, 4)
	boom := errors.New("boom")
	err := Split(context.Background(), io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), func(int64, []byte) error { return nil })
	if !errors.Is(err, boom) {
		t.Errorf("reader error: %v", err)
	}
	calls := 0
	err = Split(context.Background(), bytes.NewReader(data), func(int64, []byte) error { calls++; return boom })
	if !errors.Is(err, boom) || calls != 1 {
		t.Errorf("fn error: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Split(ctx, bytes.NewReader(data), func(int64, []byte) error { calls++; cancel(); return nil })
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("cancelled: %v after %d calls", err, calls)
	}
}

func BenchmarkSplit(b *testing.B) {
	data := randomBytes(64<<20, 5)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := Split(context.Background(), bytes.NewReader(data), func(int64, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
