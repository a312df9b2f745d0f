package kernel

import "debug/elf"

// ModinfoOf gives the external tests (debian_test.go, which boots nothing
// but reads the kernels vmtest.Kernel finds) what readModinfo reads from a
// module: the machine it is built for and its normalized name.
func ModinfoOf(b []byte) (elf.Machine, string, error) {
	mi, err := readModinfo(b)
	return mi.machine, normalizeName(mi.name), err
}
