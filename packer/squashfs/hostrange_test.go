package squashfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// TestHostFileRanges writes files that are ranges of host files, as a
// flattened image's files are ranges of its layer tars: more host files
// than the writer keeps open, visited in an order that makes it close and
// reopen them, ranges of one block, of several and of a tail only, and
// equal ranges in different host files (duplicates, compared through the
// shared descriptors). unsquashfs must read back every byte.
func TestHostFileRanges(t *testing.T) {
	dir := t.TempDir()
	bs := int64(DefaultBlockBytes)
	hosts := maxOpenHostFiles + 6
	common := randomBytes(int(2*bs+100), 77)
	var paths []string
	for i := range hosts {
		data := append(randomBytes(int(3*bs), uint64(i)), common...)
		p := filepath.Join(dir, fmt.Sprintf("layer%03d", i))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	tree := rootfs.New(testTime)
	b := treeBuilder{t, tree}
	ranges := []struct{ off, size int64 }{{0, 100}, {7, bs}, {bs - 3, 2*bs + 5}, {3 * bs, 2*bs + 100}, {3*bs + 1, 999}}
	for round := range 2 {
		for i, p := range paths {
			for j, r := range ranges {
				// Names sort host file by host file, round by round.
				name := fmt.Sprintf("/r%d/h%03d-%d", round, i, j)
				if round == 1 {
					name = fmt.Sprintf("/r%d/%d-h%03d", round, j, i)
				}
				if _, ok := tree.Get(parentOf(name)); !ok {
					b.dir(parentOf(name), 0o755)
				}
				b.file(name, 0o644, rootfs.HostFileRange{Path: p, Offset: r.off, Size: r.size}, r.size)
			}
		}
	}
	wants, treePaths, err := expect(tree)
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, tree, t.TempDir())
	compareTree(t, extract(t, img), wants, treePaths, compareOptions{})

	// The common tail of every host file is stored once.
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if distinct := int64(hosts) * 3 * bs; st.Size() > distinct+distinct/10 {
		t.Errorf("image of %d bytes, want about the %d distinct bytes", st.Size(), distinct)
	}

	// A range past the end of its host file is an error naming the file.
	short := rootfs.New(testTime)
	treeBuilder{t, short}.file("/short", 0o644, rootfs.HostFileRange{Path: paths[0], Offset: 5*bs + 50, Size: 100}, 100)
	var buf seekBuffer
	if err := Write(context.Background(), &buf, short); err == nil || !strings.Contains(err.Error(), `file "/short": content ended`) {
		t.Errorf("Write(range past the end) = %v, want an error naming /short", err)
	}
}
