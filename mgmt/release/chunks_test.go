package release

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ingotdev/ingot/packer/format/cdc"
)

// testChunks returns an index of four chunks, the third the second
// again, the last with a patch against a base, and the matching chunk
// and patch layers.
func testChunks() (ChunkIndex, map[v1.Hash]v1.Descriptor, map[v1.Hash]v1.Descriptor) {
	ix := ChunkIndex{Version: ChunkIndexVersion, Chunking: cdc.Name, Compression: ChunkCompression, Digest: sha256Hash([]byte("whole root")),
		Base: &ChunkBase{Size: 1 << 20, Digest: sha256Hash([]byte("base root"))}}
	layers, patches := map[v1.Hash]v1.Descriptor{}, map[v1.Hash]v1.Descriptor{}
	for i, size := range []int64{cdc.MaxSize, 40000, 40000, 123} {
		content := "chunk " + strconv.Itoa(i)
		if i == 2 {
			content = "chunk 1"
		}
		b := sha256Hash([]byte("blob of " + content))
		c := Chunk{Size: size, Digest: sha256Hash([]byte(content)), Blob: b, BlobSize: size/2 + 1}
		layers[b] = v1.Descriptor{MediaType: ChunkMediaType, Size: c.BlobSize, Digest: b}
		if i == 3 {
			pd := sha256Hash([]byte("patch of " + content))
			c.Patch = &ChunkPatch{Blob: pd, BlobSize: 20, DictOffset: 1000, DictSize: 5000}
			patches[pd] = v1.Descriptor{MediaType: PatchMediaType, Size: 20, Digest: pd}
		}
		ix.Chunks = append(ix.Chunks, c)
		ix.Size += size
	}
	return ix, layers, patches
}

func TestChunkPlan(t *testing.T) {
	ix, layers, patches := testChunks()
	raw, _ := json.Marshal(ix)
	plan, err := chunkPlan(raw, layers, patches)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Size != ix.Size || plan.Digest != ix.Digest || len(plan.Pieces) != 4 || plan.Base == nil || *plan.Base != *ix.Base {
		t.Fatalf("plan %+v", plan)
	}
	var off int64
	for i, p := range plan.Pieces {
		c := ix.Chunks[i]
		if p.Offset != off || p.Size != c.Size || p.Digest != c.Digest || p.Blob.Digest != c.Blob || p.Blob.Size != c.BlobSize ||
			p.Blob.MediaType != ChunkMediaType || !p.Compressed() {
			t.Errorf("piece %d: %+v", i, p)
		}
		if (p.Patch != nil) != (i == 3) || i == 3 && (p.Patch.Blob.Digest != c.Patch.Blob || p.Patch.DictOffset != 1000 || p.Patch.DictSize != 5000) {
			t.Errorf("piece %d: patch %+v", i, p.Patch)
		}
		off += p.Size
	}
	if !strings.Contains(string(raw), `"chunking":"`+cdc.Name+`"`) || !strings.Contains(string(raw), `"compression":"zstd"`) {
		t.Errorf("index JSON %s", raw)
	}
}

// TestChunkCodec: chunks and patches round-trip; a patch needs its
// dictionary; a blob never decodes to more than the size the index says.
func TestChunkCodec(t *testing.T) {
	base := []byte(strings.Repeat("the running root, version one. ", 4000))
	chunk := append([]byte("a one-line change. "), base[1000:60000]...)
	want := sha256Hash(chunk)
	blob, err := EncodeChunk(chunk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeChunk(blob, int64(len(chunk)), want, nil); err != nil || string(got) != string(chunk) {
		t.Fatalf("chunk round trip: %v", err)
	}
	patch, err := EncodeChunk(chunk, base)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeChunk(patch, int64(len(chunk)), want, base); err != nil || string(got) != string(chunk) {
		t.Fatalf("patch round trip: %v", err)
	}
	other := []byte(strings.Repeat("another root altogether!!! ", 4000))
	if _, err := DecodeChunk(patch, int64(len(chunk)), want, other); err == nil {
		t.Error("a patch decoded with another dictionary passed")
	}
	// A bomb: a small blob of a large chunk, announced as small.
	bomb, _ := EncodeChunk(make([]byte, 8<<20), nil)
	if _, err := DecodeChunk(bomb, 1000, want, nil); err == nil || !strings.Contains(err.Error(), "decoding chunk") {
		t.Errorf("a blob that decodes beyond its size: %v", err)
	}
	if _, err := DecodeChunk(blob, int64(len(chunk)), sha256Hash([]byte("x")), nil); err == nil || !strings.Contains(err.Error(), "decodes to content with digest") {
		t.Errorf("a chunk of another digest: %v", err)
	}
}

// TestChunkPlanRefuses: a chunk index that does not describe the
// manifest's chunks exactly is refused, naming what is wrong.
func TestChunkPlanRefuses(t *testing.T) {
	extra := sha256Hash([]byte("not in the index"))
	for _, tc := range []struct {
		name   string
		change func(ix *ChunkIndex, layers, patches map[v1.Hash]v1.Descriptor)
		raw    string
		err    string
	}{
		{name: "not JSON", raw: "{", err: "unexpected EOF"},
		{name: "trailing data", raw: `{"version":1} {}`, err: "data after the JSON value"},
		{name: "version", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Version = 2 }, err: "version 2"},
		{name: "chunking", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Chunking = "fixed-4k" }, err: `chunking "fixed-4k"`},
		{name: "no chunks", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Chunks = nil }, err: "no chunks"},
		{name: "too many chunks", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) {
			ix.Chunks = slices.Repeat(ix.Chunks[:1], MaxChunks+1)
		}, err: "more than 65536"},
		{name: "chunk too large", change: func(ix *ChunkIndex, l, _ map[v1.Hash]v1.Descriptor) {
			ix.Chunks[0].Size = cdc.MaxSize + 1
			ix.Size++
		}, err: "chunks[0] (" + sha256Hash([]byte("chunk 0")).String() + "): size 262145 is not within 1..262144"},
		{name: "empty chunk", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Chunks[3].Size = 0; ix.Size -= 123 }, err: "chunks[3]"},
		{name: "sizes do not add up", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Size++ }, err: "the chunks add up to 342267 bytes, the index says size 342268"},
		{name: "size beyond the chunks", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Size = 1 << 40 }, err: "size 1099511627776: not within"},
		{name: "chunk without a layer", change: func(_ *ChunkIndex, l, _ map[v1.Hash]v1.Descriptor) {
			delete(l, sha256Hash([]byte("blob of chunk 3")))
		}, err: "chunks[3] (" + sha256Hash([]byte("chunk 3")).String() + "): the manifest has no"},
		{name: "layer not in the index", change: func(_ *ChunkIndex, l, _ map[v1.Hash]v1.Descriptor) {
			l[extra] = v1.Descriptor{MediaType: ChunkMediaType, Size: 5, Digest: extra}
		}, err: "layer " + extra.String() + " is not in the index"},
		{name: "layer of another size", change: func(ix *ChunkIndex, l, _ map[v1.Hash]v1.Descriptor) {
			d := l[ix.Chunks[1].Blob]
			d.Size = 19999
			l[d.Digest] = d
		}, err: "chunks[1] (" + sha256Hash([]byte("chunk 1")).String() + "): blob size 20001, its layer says 19999"},
		{name: "compression", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Compression = "xz" }, err: `compression "xz"`},
		{name: "blob larger than a chunk can compress to", change: func(ix *ChunkIndex, l, _ map[v1.Hash]v1.Descriptor) {
			ix.Chunks[3].BlobSize = 5000
		}, err: "blob size 5000 is not within 1..1148"},
		{name: "patch without a base", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Base = nil }, err: "a patch, but the index names no base"},
		{name: "patch dictionary beyond the base", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) {
			ix.Chunks[3].Patch.DictOffset = 1<<20 - 100
		}, err: "patch dictionary [1048476, +5000) is not within the 1048576-byte base"},
		{name: "patch dictionary too large", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) {
			ix.Chunks[3].Patch.DictOffset, ix.Chunks[3].Patch.DictSize = 0, MaxPatchDictBytes+1
		}, err: "is not within the 1048576-byte base (at most"},
		{name: "patch without a layer", change: func(_ *ChunkIndex, _, p map[v1.Hash]v1.Descriptor) {
			clear(p)
		}, err: "the manifest has no " + PatchMediaType},
		{name: "patch layer not in the index", change: func(_ *ChunkIndex, _, p map[v1.Hash]v1.Descriptor) {
			p[extra] = v1.Descriptor{MediaType: PatchMediaType, Size: 5, Digest: extra}
		}, err: PatchMediaType + " layer " + extra.String() + " is not in the index"},
		{name: "negative base", change: func(ix *ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) { ix.Base.Size = -1 }, err: "want a sha256 digest and a positive size"},
		{name: "sha512 chunk", raw: strings.Replace(mustJSON(testChunks()), `"sha256:`, `"sha512:`, 1), err: "wrong number of hex digits"},
		{name: "no root digest", raw: withoutRootDigest(mustJSON(testChunks())), err: "root digest \":\": only sha256"},
	} {
		ix, layers, patches := testChunks()
		raw := tc.raw
		if tc.change != nil {
			tc.change(&ix, layers, patches)
			b, _ := json.Marshal(ix)
			raw = string(b)
		}
		_, err := chunkPlan([]byte(raw), layers, patches)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}

func mustJSON(ix ChunkIndex, _, _ map[v1.Hash]v1.Descriptor) string {
	b, _ := json.Marshal(ix)
	return string(b)
}

func withoutRootDigest(raw string) string {
	var m map[string]any
	json.Unmarshal([]byte(raw), &m)
	delete(m, "digest")
	b, _ := json.Marshal(m)
	return string(b)
}
