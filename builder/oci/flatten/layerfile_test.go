package flatten

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestLayerFile reads a file through layerFile with random reads and
// skips, forward and back, within the buffer and past it, and past the
// end, checking every byte and offset against a bytes.Reader.
func TestLayerFile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 3*layerReadBytes+12345)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "layer")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, want := newLayerFile(f), bytes.NewReader(data)
	for step := 0; step < 20000; step++ {
		if r.IntN(3) == 0 {
			off := int64(r.IntN(2*layerReadBytes)) - layerReadBytes/2
			if r.IntN(2) == 0 {
				off = int64(r.IntN(600)) - 100
			}
			if pos, _ := want.Seek(0, io.SeekCurrent); pos+off < 0 {
				continue
			}
			gp, gerr := got.Seek(off, io.SeekCurrent)
			wp, werr := want.Seek(off, io.SeekCurrent)
			if gp != wp || (gerr == nil) != (werr == nil) {
				t.Fatalf("step %d: Seek(%d) = %d, %v; want %d, %v", step, off, gp, gerr, wp, werr)
			}
			continue
		}
		n := 1 + r.IntN(1500)
		gb, wb := make([]byte, n), make([]byte, n)
		gn, gerr := io.ReadFull(got, gb)
		wn, werr := io.ReadFull(want, wb)
		if gn != wn || !errors.Is(gerr, werr) || !bytes.Equal(gb[:gn], wb[:wn]) {
			t.Fatalf("step %d: ReadFull(%d) = %d, %v; want %d, %v (or other bytes)", step, n, gn, gerr, wn, werr)
		}
		if o, _ := want.Seek(0, io.SeekCurrent); got.offset() != o {
			t.Fatalf("step %d: offset %d, want %d", step, got.offset(), o)
		}
		if werr != nil {
			// Start again from the beginning.
			got.Seek(-got.offset(), io.SeekCurrent)
			want.Seek(0, io.SeekStart)
		}
	}
	if _, err := got.Seek(0, io.SeekStart); err == nil {
		t.Errorf("Seek(SeekStart) succeeded; only SeekCurrent is supported")
	}
}
