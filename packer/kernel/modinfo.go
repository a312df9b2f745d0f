package kernel

import (
	"bytes"
	"debug/elf"
	"fmt"
	"path"
	"strings"
)

// modinfoSection is the ELF section where modpost and MODULE_*() macros
// leave a module's metadata as NUL-separated key=value strings.
const modinfoSection = ".modinfo"

// modinfo is what Closure and the builder need from a module's .modinfo.
type modinfo struct {
	name     string
	depends  []string
	aliases  []string
	softdeps []string
	vermagic string
	machine  elf.Machine
	class    elf.Class
}

// parseModinfo parses the contents of a .modinfo section. Keys may repeat
// (alias, softdep); unknown keys and strings without '=' are ignored, since
// the section also carries padding and keys newer kernels add.
func parseModinfo(b []byte) modinfo {
	var mi modinfo
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.depends = append(mi.depends, normalizeName(d))
				}
			}
		case "alias":
			mi.aliases = append(mi.aliases, v)
		case "softdep":
			mi.softdeps = append(mi.softdeps, v)
		case "vermagic":
			mi.vermagic = v
		}
	}
	return mi
}

// readModinfo reads the .modinfo section and machine of a module's ELF image.
func readModinfo(b []byte) (modinfo, error) {
	if !bytes.HasPrefix(b, []byte(elf.ELFMAG)) {
		return modinfo{}, fmt.Errorf("not an ELF file: starts with %q", b[:min(len(b), len(elf.ELFMAG))])
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return modinfo{}, fmt.Errorf("ELF: %w", err)
	}
	if f.Type != elf.ET_REL {
		return modinfo{}, fmt.Errorf("ELF type %v, want a relocatable module (ET_REL)", f.Type)
	}
	sec := f.Section(modinfoSection)
	if sec == nil {
		return modinfo{}, fmt.Errorf("no %s section", modinfoSection)
	}
	if sec.Type == elf.SHT_NOBITS {
		return modinfo{}, fmt.Errorf("%s section has no data", modinfoSection)
	}
	data, err := sec.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("%s section: %w", modinfoSection, err)
	}
	mi := parseModinfo(data)
	mi.machine, mi.class = f.Machine, f.Class
	return mi, nil
}

// normalizeName maps a module name to the kernel's spelling: modprobe and
// the kernel treat '-' and '_' alike and record '_'.
func normalizeName(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

// nameFromPath is the module name the kernel derives from a file name:
// "kernel/fs/nls/nls_iso8859-1.ko" is nls_iso8859_1.
func nameFromPath(p string) string {
	return normalizeName(strings.TrimSuffix(path.Base(p), moduleSuffix))
}

// debianArch maps an ELF machine to the Debian architecture name, for
// packages whose control file is missing or says "all".
func debianArch(m elf.Machine, class elf.Class) string {
	switch m {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_ARM:
		return "armhf"
	case elf.EM_386:
		return "i386"
	case elf.EM_RISCV:
		if class == elf.ELFCLASS64 {
			return "riscv64"
		}
	case elf.EM_S390:
		return "s390x"
	case elf.EM_PPC64:
		return "ppc64el"
	case elf.EM_LOONGARCH:
		return "loong64"
	}
	return ""
}
