package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"

	format "github.com/ingotdev/ingot/packer/format/squashfs"
	"github.com/ingotdev/ingot/packer/rootfs"
)

// elfLike returns n bytes of numbered lines, which every compressor
// shrinks, starting with the ELF magic.
func elfLike(n int, seed uint64) rootfs.Bytes {
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "line %d of a file made from seed %d\n", i, seed)
	}
	b = b[:n]
	copy(b, "\x7fELF")
	return b
}

// rawTree holds files the predicate below chooses (ELF under /bin) and
// files it does not: text, an ELF file elsewhere with the same content as
// one chosen, an ELF file smaller than a block.
func rawTree(t *testing.T) (*rootfs.Tree, map[string]int64) {
	tree := rootfs.New(testTime)
	b := treeBuilder{t, tree}
	bs := DefaultBlockBytes
	tool := elfLike(3*bs+1000, 1)
	text := elfLike(4*bs+2000, 2)
	copy(text, "text")
	small := elfLike(500, 3)
	b.dir("/bin", 0o755)
	b.dir("/data", 0o755)
	b.file("/bin/tool", 0o755, tool, int64(len(tool)))
	b.file("/bin/small", 0o755, small, int64(len(small)))
	b.file("/data/text", 0o644, text, int64(len(text)))
	b.file("/data/tool-copy", 0o755, tool, int64(len(tool)))
	return tree, map[string]int64{"tool": int64(len(tool)), "text": int64(len(text))}
}

func chooseBinELF(path string, head []byte) bool {
	return strings.HasPrefix(path, "/bin/") && bytes.HasPrefix(head, []byte("\x7fELF"))
}

// TestUncompressedFiles checks WithUncompressed: unsquashfs and the
// kernel read the image back byte for byte, the chosen file's full blocks carry the
// uncompressed bit and a full block's size, the others are compressed,
// and an identical file that was not chosen keeps compressed blocks of
// its own.
// Both compressions the targets use are checked: zstd (VMs), gzip (Pi).
func TestUncompressedFiles(t *testing.T) {
	for _, comp := range []Compression{Zstd, Gzip} {
		t.Run(comp.String(), func(t *testing.T) { testUncompressedFiles(t, comp) })
	}
}

func testUncompressedFiles(t *testing.T, comp Compression) {
	tree, sizes := rawTree(t)
	wants, paths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	asked := map[string]bool{}
	img := writeImage(t, tree, t.TempDir(), WithCompression(comp), WithUncompressed(func(path string, head []byte) bool {
		mu.Lock()
		asked[path] = true
		mu.Unlock()
		return chooseBinELF(path, head)
	}))
	for _, p := range []string{"/bin/tool", "/bin/small", "/data/text", "/data/tool-copy"} {
		if !asked[p] {
			t.Errorf("predicate never asked about %s", p)
		}
	}

	t.Run("unsquashfs", func(t *testing.T) {
		compareTree(t, extract(t, img), wants, paths, compareOptions{})
	})
	t.Run("kernel", func(t *testing.T) {
		compareTree(t, mount(t, img), wants, paths, compareOptions{})
	})

	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	files := fileInodes(t, data, comp)
	bs := uint32(DefaultBlockBytes)
	var rawTool, packedTool int
	for _, f := range files[sizes["tool"]] {
		if len(f) != 3 {
			t.Fatalf("tool: %d full blocks, want 3", len(f))
		}
		switch {
		case allWords(f, func(w uint32) bool { return w == bs|dataUncompressedBit }):
			rawTool++
		case allWords(f, func(w uint32) bool { return w&dataUncompressedBit == 0 && w < bs }):
			packedTool++
		default:
			t.Errorf("tool: block size words %#x mix raw and compressed blocks", f)
		}
	}
	if rawTool != 1 || packedTool != 1 {
		t.Errorf("tool's content: %d copies stored raw, %d compressed; want one each (/bin/tool raw, /data/tool-copy compressed)", rawTool, packedTool)
	}
	text := files[sizes["text"]]
	if len(text) != 1 || len(text[0]) != 4 || !allWords(text[0], func(w uint32) bool { return w&dataUncompressedBit == 0 && w < bs }) {
		t.Errorf("text: block size words %#x, want 4 compressed blocks", text)
	}
	// The raw blocks are in the image as they are in the file.
	e, _ := tree.Get("/bin/tool")
	if !bytes.Contains(data, e.Content.(rootfs.Bytes)[:3*bs]) {
		t.Error("/bin/tool's three full blocks are not in the image verbatim")
	}

	// Same tree and options, any number of workers: the same bytes.
	for _, workers := range []int{1, 4} {
		var buf seekBuffer
		if err := Write(context.Background(), &buf, tree, WithCompression(comp), WithUncompressed(chooseBinELF), WithWorkers(workers)); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(buf.b) != sha256.Sum256(data) {
			t.Errorf("with %d workers the image differs", workers)
		}
	}
}

func inflate(b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func allWords(ws []uint32, ok func(uint32) bool) bool {
	for _, w := range ws {
		if !ok(w) {
			return false
		}
	}
	return true
}

// fileInodes reads the inode table of a zstd or gzip image of
// directories and regular files and returns, by file size, the block size
// words of each file inode.
func fileInodes(t *testing.T, img []byte, comp Compression) map[int64][][]uint32 {
	t.Helper()
	sb, err := format.Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var table []byte
	for b := img[sb.InodeTableStart:sb.DirTableStart]; len(b) > 0; {
		h := binary.LittleEndian.Uint16(b)
		n := int(h &^ metadataUncompressedBit)
		block := b[2 : 2+n]
		if h&metadataUncompressedBit == 0 {
			if comp == Gzip {
				block, err = inflate(block)
			} else {
				block, err = dec.DecodeAll(block, nil)
			}
			if err != nil {
				t.Fatalf("inode table: %v", err)
			}
		}
		table = append(table, block...)
		b = b[2+n:]
	}
	le := binary.LittleEndian
	out := map[int64][][]uint32{}
	for i := 0; i < int(sb.Inodes); i++ {
		var size int64
		var frag uint32
		var words int
		switch typ := le.Uint16(table); typ {
		case 1: // basic directory
			table = table[32:]
			continue
		case 2: // basic file
			frag, size, words = le.Uint32(table[20:]), int64(le.Uint32(table[28:])), 32
		case 9: // extended file
			size, frag, words = int64(le.Uint64(table[24:])), le.Uint32(table[44:]), 56
		default:
			t.Fatalf("inode %d: type %d, want a directory or regular file", i, typ)
		}
		n := size / int64(sb.BlockSize)
		if frag == 0xffffffff && size%int64(sb.BlockSize) != 0 {
			n++
		}
		ws := make([]uint32, n)
		for j := range ws {
			ws[j] = le.Uint32(table[words+4*j:])
		}
		out[size] = append(out[size], ws)
		table = table[words+4*int(n):]
	}
	return out
}
