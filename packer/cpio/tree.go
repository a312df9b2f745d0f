package cpio

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// maxHardlinkChain bounds how many hard links WriteTree follows to find a
// file, so a tree whose links point at each other fails instead of looping.
const maxHardlinkChain = 64

// writeBufferBytes sizes the buffer between the many small header writes
// and the destination.
const writeBufferBytes = 64 << 10

// treeItem is one entry of the tree as it will be written.
type treeItem struct {
	path  string
	entry rootfs.Entry
	// inode is the index of the item whose metadata and content this item
	// shares: itself, or the file a hard link resolves to.
	inode int
	// subdirs counts the directories directly inside a directory, for its
	// link count.
	subdirs uint32
}

// WriteTree writes t as a complete archive (trailer included) to w, in the
// tree's deterministic walk order, so every directory precedes its contents.
// Names are relative, the root is ".". Hard links share an inode number and
// link count, and only the last of them in the archive carries the data, as
// newc readers (GNU cpio, the kernel) expect. A hard link to a symlink is
// written as a second symlink, because the kernel's unpacker cannot link
// symlinks. Extended attributes are dropped: newc has no place for them.
func WriteTree(w io.Writer, t *rootfs.Tree) error {
	items, err := planTree(t)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, writeBufferBytes)
	cw := NewWriter(bw)
	if err := writeItems(cw, items); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("cpio: flush: %w", err)
	}
	return nil
}

// planTree lists the tree in walk order and resolves hard links to the
// item that holds the inode.
func planTree(t *rootfs.Tree) ([]treeItem, error) {
	var items []treeItem
	index := map[string]int{}
	err := t.Walk(func(p string, e *rootfs.Entry) error {
		index[p] = len(items)
		items = append(items, treeItem{path: p, entry: *e, inode: len(items)})
		if e.Kind == rootfs.KindDir && p != "/" {
			items[index[parentDir(p)]].subdirs++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cpio: walk: %w", err)
	}
	for i := range items {
		if items[i].entry.Kind != rootfs.KindHardlink {
			continue
		}
		target, err := resolveHardlink(items, index, i)
		if err != nil {
			return nil, err
		}
		if items[target].entry.Kind == rootfs.KindSymlink {
			// Copy the symlink rather than share its inode; see WriteTree.
			items[i].entry = items[target].entry
			continue
		}
		items[i].inode = target
	}
	return items, nil
}

func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i == 0 {
		return "/"
	}
	return p[:i]
}

func resolveHardlink(items []treeItem, index map[string]int, i int) (int, error) {
	cur := i
	for range maxHardlinkChain {
		target := items[cur].entry.Target
		j, ok := index[target]
		if !ok {
			return 0, fmt.Errorf("cpio: hardlink %q: target %q is not in the tree", items[i].path, target)
		}
		switch items[j].entry.Kind {
		case rootfs.KindDir:
			return 0, fmt.Errorf("cpio: hardlink %q: target %q is a directory", items[i].path, target)
		case rootfs.KindHardlink:
			cur = j
			continue
		}
		return j, nil
	}
	return 0, fmt.Errorf("cpio: hardlink %q: more than %d links in a chain", items[i].path, maxHardlinkChain)
}

func writeItems(cw *Writer, items []treeItem) error {
	// Inode numbers follow first appearance; link counts and the last
	// member of each hard link group come from a pass over the plan.
	nlink := make([]uint32, len(items))
	last := make([]int, len(items))
	for i, it := range items {
		nlink[it.inode]++
		last[it.inode] = i
	}
	inos := make([]uint32, len(items))
	for i, it := range items {
		owner := &items[it.inode]
		if inos[it.inode] == 0 {
			inos[it.inode] = cw.NextIno()
		}
		h, err := header(it.path, &owner.entry)
		if err != nil {
			return err
		}
		h.Ino = inos[it.inode]
		h.NLink = nlink[it.inode]
		if owner.entry.Kind == rootfs.KindDir {
			h.NLink = 2 + owner.subdirs
		}
		withData := last[it.inode] == i
		if !withData {
			h.Size = 0
		}
		if err := cw.WriteHeader(h); err != nil {
			return err
		}
		if !withData || h.Size == 0 {
			continue
		}
		switch owner.entry.Kind {
		case rootfs.KindSymlink:
			if _, err := io.WriteString(cw, owner.entry.Target); err != nil {
				return err
			}
		case rootfs.KindFile:
			if err := copyContent(cw, owner.path, &owner.entry); err != nil {
				return err
			}
		}
	}
	return nil
}

// header maps a tree entry to a cpio header named p.
func header(p string, e *rootfs.Entry) (*Header, error) {
	name := "."
	if p != "/" {
		name = p[1:]
	}
	h := &Header{
		Name:    name,
		Mode:    e.Mode & rootfs.PermMask,
		UID:     e.UID,
		GID:     e.GID,
		ModTime: e.ModTime,
	}
	switch e.Kind {
	case rootfs.KindFile:
		h.Mode |= ModeRegular
		h.Size = e.Size
	case rootfs.KindDir:
		h.Mode |= ModeDir
	case rootfs.KindSymlink:
		h.Mode |= ModeSymlink
		h.Size = int64(len(e.Target))
	case rootfs.KindCharDevice:
		h.Mode |= ModeCharDevice
		h.DevMajor, h.DevMinor = e.DevMajor, e.DevMinor
	case rootfs.KindBlockDevice:
		h.Mode |= ModeBlockDevice
		h.DevMajor, h.DevMinor = e.DevMajor, e.DevMinor
	case rootfs.KindFIFO:
		h.Mode |= ModeFIFO
	case rootfs.KindSocket:
		h.Mode |= ModeSocket
	default:
		return nil, fmt.Errorf("cpio: %q: cannot write a %s", p, e.Kind)
	}
	if e.ModTime < 0 || e.ModTime > maxField {
		return nil, fmt.Errorf("cpio: %q: modification time %d does not fit newc's 32 bits", p, e.ModTime)
	}
	if h.Size > maxField {
		return nil, fmt.Errorf("cpio: %q: %d bytes exceed newc's limit of %d", p, h.Size, int64(maxField))
	}
	return h, nil
}

// copyContent streams a file's content and insists on exactly e.Size bytes,
// since a short or long copy would shift every later entry.
func copyContent(cw *Writer, p string, e *rootfs.Entry) error {
	rc, err := e.Content.Open()
	if err != nil {
		return fmt.Errorf("cpio: %q: open content: %w", p, err)
	}
	defer rc.Close()
	n, err := io.CopyN(cw, rc, e.Size)
	if err != nil {
		if err == io.EOF {
			return fmt.Errorf("cpio: %q: content has %d bytes, entry says %d", p, n, e.Size)
		}
		return fmt.Errorf("cpio: %q: copy content: %w", p, err)
	}
	var probe [1]byte
	if m, _ := io.ReadFull(rc, probe[:]); m != 0 {
		return fmt.Errorf("cpio: %q: content is longer than the entry's %d bytes", p, e.Size)
	}
	if err := rc.Close(); err != nil {
		return fmt.Errorf("cpio: %q: close content: %w", p, err)
	}
	return nil
}
