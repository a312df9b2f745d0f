package kernel

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// moduleELF hand-assembles the smallest relocatable ELF64 file debug/elf
// and the kernel's module loader would recognise as carrying a .modinfo:
// a header, the section bytes, a section name table and three section
// headers (null, .modinfo, .shstrtab).
func moduleELF(machine elf.Machine, info ...string) []byte {
	modinfo := []byte(strings.Join(info, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehdrBytes, shdrBytes = 64, 64
	modinfoOff := uint64(ehdrBytes)
	shstrOff := modinfoOff + uint64(len(modinfo))
	shOff := (shstrOff + uint64(len(shstrtab)) + 7) &^ 7
	var b bytes.Buffer
	hdr := elf.Header64{
		Type:      uint16(elf.ET_REL),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Shoff:     shOff,
		Ehsize:    ehdrBytes,
		Shentsize: shdrBytes,
		Shnum:     3,
		Shstrndx:  2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, &hdr)
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, shOff-uint64(b.Len())))
	for _, sh := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: modinfoOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint64(len(shstrtab)), Addralign: 1},
	} {
		binary.Write(&b, binary.LittleEndian, &sh)
	}
	return b.Bytes()
}

// arFile is one member for buildAR.
type arFile struct {
	name string
	data []byte
}

// arFlavor selects how buildAR spells member names.
type arFlavor int

const (
	arDpkg arFlavor = iota // "name" padded with spaces, as dpkg-deb writes
	arGNU                  // "name/", long names via a "//" table, a "/" symbol table
	arBSD                  // "#1/len" with the name after the header
)

func arHeader(name string, size int) string {
	return fmt.Sprintf("%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", size)
}

// buildAR writes an ar archive; odd-sized members get the padding byte.
func buildAR(flavor arFlavor, files ...arFile) []byte {
	var b bytes.Buffer
	b.WriteString(arMagic)
	member := func(name string, data []byte) {
		b.WriteString(arHeader(name, len(data)))
		b.Write(data)
		if len(data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	var table bytes.Buffer
	offsets := map[string]int{}
	if flavor == arGNU {
		member("/", []byte("\x00\x00\x00\x00")) // empty symbol table
		for _, f := range files {
			if len(f.name) > 15 {
				offsets[f.name] = table.Len()
				table.WriteString(f.name + "/\n")
			}
		}
		if table.Len() > 0 {
			member("//", table.Bytes())
		}
	}
	for _, f := range files {
		switch {
		case flavor == arGNU && len(f.name) > 15:
			member(fmt.Sprintf("/%d", offsets[f.name]), f.data)
		case flavor == arGNU:
			member(f.name+"/", f.data)
		case flavor == arBSD:
			b.WriteString(arHeader(fmt.Sprintf("#1/%d", len(f.name)), len(f.name)+len(f.data)))
			b.WriteString(f.name)
			b.Write(f.data)
			if (len(f.name)+len(f.data))%2 == 1 {
				b.WriteByte('\n')
			}
		default:
			member(f.name, f.data)
		}
	}
	return b.Bytes()
}

// tarFile is one entry for buildTar; a name ending in '/' is a directory,
// a non-empty link a symlink.
type tarFile struct {
	name string
	data []byte
	link string
}

func buildTar(t *testing.T, files ...tarFile) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		switch {
		case strings.HasSuffix(f.name, "/"):
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case f.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, f.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// compress compresses b for a file name ending in ext ("", ".xz", ".zst",
// ".gz").
func compress(t *testing.T, ext string, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch ext {
	case "", ".tar":
		return b
	case ".xz":
		w, err := xz.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".zst":
		w, err := zstd.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".gz":
		w := gzip.NewWriter(&out)
		w.Write(b)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("compress: unknown extension %q", ext)
	}
	return out.Bytes()
}

// buildDeb assembles a kernel package: debian-binary, control.tar.gz with
// the given Architecture and data.tar<dataExt> holding files.
func buildDeb(t *testing.T, arch, dataExt string, files ...tarFile) []byte {
	t.Helper()
	control := buildTar(t,
		tarFile{name: "./"},
		tarFile{name: "./control", data: []byte("Package: linux-image-test\nVersion: 1\nArchitecture: " + arch + "\nDescription: test\n")})
	return buildAR(arDpkg,
		arFile{"debian-binary", []byte("2.0\n")},
		arFile{"control.tar.gz", compress(t, ".gz", control)},
		arFile{"data.tar" + dataExt, compress(t, dataExt, buildTar(t, files...))})
}
