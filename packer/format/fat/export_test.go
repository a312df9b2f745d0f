package fat

// What the external tests (which write volumes with packer/fat, which
// imports this package) need of the internals.

var ParseBootSector = parseBootSector

const Bad = fatBad

// Entry returns where the 8.3 entry of name is and its first cluster.
func (fsys *FS) Entry(name string) (off int64, first uint32, err error) {
	d, err := fsys.lookup("test", name)
	return d.off, d.first, err
}
