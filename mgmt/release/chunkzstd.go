package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// How chunk blobs and patches are encoded. The encoder's settings are part
// of what makes publishing reproducible (the same chunk gives the same
// blob); any zstd decoder reads the frames.
const (
	// chunkLevel is the zstd level of chunk blobs and patches.
	chunkLevel = zstd.SpeedBetterCompression
	// patchWindow is the zstd window of a patch: it covers the dictionary
	// and the chunk.
	patchWindow = 1 << 20
	// patchDictID is the dictionary id written into patch frames.
	patchDictID = 1
	// PatchReach is how far around a chunk's own offset its patch's
	// dictionary reaches into the base root, on either side: a program
	// whose position in the root moved by less still finds its old bytes.
	PatchReach = 256 << 10
	// MaxPatchDictBytes bounds a patch's dictionary: the chunk's own
	// range plus PatchReach on either side.
	MaxPatchDictBytes = 2*PatchReach + 256<<10
)

// EncodeChunk compresses chunk raw as one zstd frame; with dict (a range
// of a base root) the frame is a patch that only a decoder with the same
// dict reads.
func EncodeChunk(raw, dict []byte) ([]byte, error) {
	opts := []zstd.EOption{zstd.WithEncoderLevel(chunkLevel), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false)}
	if dict != nil {
		opts = append(opts, zstd.WithEncoderDictRaw(patchDictID, dict), zstd.WithWindowSize(patchWindow))
	}
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		return nil, fmt.Errorf("release: chunk encoder: %w", err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil), nil
}

// DecodeChunk decodes blob, a chunk blob (dict nil) or a patch (dict the
// range of the base root it names), into a chunk of exactly size bytes
// with SHA-256 want. It never produces more than size bytes, whatever the
// frame claims, so a hostile blob cannot make it allocate more.
func DecodeChunk(blob []byte, size int64, want v1.Hash, dict []byte) ([]byte, error) {
	opts := []zstd.DOption{zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxMemory(uint64(MaxPatchDictBytes) + 4<<20)}
	if dict != nil {
		opts = append(opts, zstd.WithDecoderDictRaw(patchDictID, dict), zstd.WithDecoderMaxWindow(patchWindow))
	}
	dec, err := zstd.NewReader(nil, opts...)
	if err != nil {
		return nil, fmt.Errorf("release: chunk decoder: %w", err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(blob, make([]byte, 0, size))
	if err != nil {
		return nil, fmt.Errorf("release: decoding chunk %s: %w", want, err)
	}
	if int64(len(out)) != size {
		return nil, fmt.Errorf("release: chunk %s decodes to %d bytes, the index says %d", want, len(out), size)
	}
	sum := sha256.Sum256(out)
	if got := hex.EncodeToString(sum[:]); got != want.Hex {
		return nil, fmt.Errorf("release: chunk %s decodes to content with digest sha256:%s", want, got)
	}
	return out, nil
}
