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

// testChunks returns an index of three chunks, the second one repeated,
// and the matching chunk layers.
func testChunks() (ChunkIndex, map[v1.Hash]v1.Descriptor) {
	ix := ChunkIndex{Version: ChunkIndexVersion, Chunking: cdc.Name, Digest: sha256Hash([]byte("whole root"))}
	layers := map[v1.Hash]v1.Descriptor{}
	for i, size := range []int64{cdc.MaxSize, 40000, 40000, 123} {
		content := "chunk " + strconv.Itoa(i)
		if i == 2 {
			content = "chunk 1"
		}
		d := sha256Hash([]byte(content))
		ix.Chunks = append(ix.Chunks, Chunk{Size: size, Digest: d})
		layers[d] = v1.Descriptor{MediaType: ChunkMediaType, Size: size, Digest: d}
		ix.Size += size
	}
	return ix, layers
}

func TestChunkPlan(t *testing.T) {
	ix, layers := testChunks()
	raw, _ := json.Marshal(ix)
	plan, err := chunkPlan(raw, layers)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Size != ix.Size || plan.Digest != ix.Digest || len(plan.Pieces) != 4 {
		t.Fatalf("plan %+v", plan)
	}
	var off int64
	for i, p := range plan.Pieces {
		if p.Offset != off || p.Size != ix.Chunks[i].Size || p.Digest != ix.Chunks[i].Digest || p.Blob.Digest != p.Digest || p.Blob.Size != p.Size || p.Blob.MediaType != ChunkMediaType {
			t.Errorf("piece %d: %+v", i, p)
		}
		off += p.Size
	}
	if !strings.Contains(string(raw), `"chunking":"`+cdc.Name+`"`) || !strings.Contains(string(raw), `"digest":"sha256:`) {
		t.Errorf("index JSON %s", raw)
	}
}

// TestChunkPlanRefuses: a chunk index that does not describe the
// manifest's chunks exactly is refused, naming what is wrong.
func TestChunkPlanRefuses(t *testing.T) {
	extra := sha256Hash([]byte("not in the index"))
	for _, tc := range []struct {
		name   string
		change func(ix *ChunkIndex, layers map[v1.Hash]v1.Descriptor)
		raw    string
		err    string
	}{
		{name: "not JSON", raw: "{", err: "unexpected EOF"},
		{name: "trailing data", raw: `{"version":1} {}`, err: "data after the JSON value"},
		{name: "version", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) { ix.Version = 2 }, err: "version 2"},
		{name: "chunking", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) { ix.Chunking = "fixed-4k" }, err: `chunking "fixed-4k"`},
		{name: "no chunks", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) { ix.Chunks = nil }, err: "no chunks"},
		{name: "too many chunks", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) {
			ix.Chunks = slices.Repeat(ix.Chunks[:1], MaxChunks+1)
		}, err: "more than 65536"},
		{name: "chunk too large", change: func(ix *ChunkIndex, l map[v1.Hash]v1.Descriptor) {
			ix.Chunks[0].Size = cdc.MaxSize + 1
			ix.Size++
			d := l[ix.Chunks[0].Digest]
			d.Size++
			l[ix.Chunks[0].Digest] = d
		}, err: "chunks[0] (" + sha256Hash([]byte("chunk 0")).String() + "): size 262145 is not within 1..262144"},
		{name: "empty chunk", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) { ix.Chunks[3].Size = 0; ix.Size -= 123 }, err: "chunks[3]"},
		{name: "sizes do not add up", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) { ix.Size++ }, err: "the chunks add up to 342267 bytes, the index says size 342268"},
		{name: "size beyond the chunks", change: func(ix *ChunkIndex, _ map[v1.Hash]v1.Descriptor) { ix.Size = 1 << 40 }, err: "size 1099511627776: not within"},
		{name: "chunk without a layer", change: func(_ *ChunkIndex, l map[v1.Hash]v1.Descriptor) {
			delete(l, sha256Hash([]byte("chunk 3")))
		}, err: "chunks[3] (" + sha256Hash([]byte("chunk 3")).String() + "): the manifest has no"},
		{name: "layer not in the index", change: func(_ *ChunkIndex, l map[v1.Hash]v1.Descriptor) {
			l[extra] = v1.Descriptor{MediaType: ChunkMediaType, Size: 5, Digest: extra}
		}, err: "layer " + extra.String() + " is not in the index"},
		{name: "layer of another size", change: func(ix *ChunkIndex, l map[v1.Hash]v1.Descriptor) {
			d := l[ix.Chunks[1].Digest]
			d.Size = 39999
			l[d.Digest] = d
		}, err: "chunks[1] (" + sha256Hash([]byte("chunk 1")).String() + "): size 40000, its layer says 39999"},
		{name: "sha512 chunk", raw: strings.Replace(mustJSON(testChunks()), `"sha256:`, `"sha512:`, 1), err: "wrong number of hex digits"},
		{name: "no root digest", raw: withoutRootDigest(mustJSON(testChunks())), err: "root digest \":\": only sha256"},
	} {
		ix, layers := testChunks()
		raw := tc.raw
		if tc.change != nil {
			tc.change(&ix, layers)
			b, _ := json.Marshal(ix)
			raw = string(b)
		}
		_, err := chunkPlan([]byte(raw), layers)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}

func mustJSON(ix ChunkIndex, _ map[v1.Hash]v1.Descriptor) string {
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
