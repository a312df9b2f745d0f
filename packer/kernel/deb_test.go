package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const testVersion = "6.1.0-test-amd64"

func testModules() map[string][]byte {
	return map[string][]byte{
		"virtio_ring": moduleELF(elf.EM_X86_64, "name=virtio_ring", "depends="),
		"virtio":      moduleELF(elf.EM_X86_64, "name=virtio", "depends=virtio_ring"),
		"virtio_blk":  moduleELF(elf.EM_X86_64, "name=virtio_blk", "depends=virtio,virtio_ring", "alias=virtio:d00000002v*"),
		// No name= key: the name comes from the file, '-' becoming '_'.
		"nls_iso8859_1": moduleELF(elf.EM_X86_64, "depends="),
	}
}

// testDebFiles lays out a kernel package's data.tar; modExt is the
// compression suffix of the module files.
func testDebFiles(t *testing.T, modExt string) []tarFile {
	mods := testModules()
	dir := "./lib/modules/" + testVersion + "/"
	return []tarFile{
		{name: "./"},
		{name: "./boot/"},
		{name: "./boot/System.map-" + testVersion, data: []byte("ffffffff T _text\n")},
		{name: "./boot/config-" + testVersion, data: []byte("CONFIG_RD_ZSTD=y\n")},
		{name: "./boot/vmlinuz-" + testVersion, data: []byte("MZ kernel image")},
		{name: dir},
		{name: dir + "build", link: "/usr/src/linux-headers-" + testVersion},
		{name: dir + "modules.builtin", data: []byte("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n")},
		{name: dir + "modules.order", data: []byte("kernel/drivers/virtio/virtio.ko\n")},
		{name: dir + "kernel/drivers/virtio/virtio_ring.ko" + modExt, data: compress(t, modExt, mods["virtio_ring"])},
		{name: dir + "kernel/drivers/virtio/virtio.ko" + modExt, data: compress(t, modExt, mods["virtio"])},
		{name: dir + "kernel/drivers/block/virtio_blk.ko" + modExt, data: compress(t, modExt, mods["virtio_blk"])},
		{name: dir + "kernel/fs/nls/nls_iso8859-1.ko" + modExt, data: compress(t, modExt, mods["nls_iso8859_1"])},
		{name: "./usr/share/doc/linux-image/changelog.gz", data: []byte("x")},
	}
}

func TestReadDeb(t *testing.T) {
	mods := testModules()
	for _, dataExt := range []string{".xz", ".zst", ".gz", ""} {
		for _, modExt := range []string{"", ".xz", ".zst", ".gz"} {
			name := "data.tar" + dataExt + "/module.ko" + modExt
			deb := buildDeb(t, "amd64", dataExt, testDebFiles(t, modExt)...)
			k, err := ReadDeb(context.Background(), bytes.NewReader(deb))
			if err != nil {
				t.Errorf("%s: ReadDeb = %v", name, err)
				continue
			}
			if k.Version != testVersion || k.Arch != "amd64" || string(k.Image) != "MZ kernel image" || string(k.Config) != "CONFIG_RD_ZSTD=y\n" {
				t.Errorf("%s: ReadDeb = version %q arch %q image %q config %q, want %q amd64 and the files' bytes",
					name, k.Version, k.Arch, k.Image, k.Config, testVersion)
			}
			var names []string
			for n, m := range k.Modules {
				names = append(names, n)
				if !bytes.Equal(m.Data, mods[n]) {
					t.Errorf("%s: module %s: Data is %d bytes, want the %d uncompressed bytes", name, n, len(m.Data), len(mods[n]))
				}
				if strings.HasSuffix(m.Path, ".ko"+modExt) && modExt != "" {
					t.Errorf("%s: module %s: Path %q keeps the compression suffix", name, n, m.Path)
				}
			}
			sort.Strings(names)
			if got := strings.Join(names, ","); got != "nls_iso8859_1,virtio,virtio_blk,virtio_ring" {
				t.Errorf("%s: modules = %s", name, got)
			}
			blk := k.Modules["virtio_blk"]
			if blk == nil || blk.Path != "kernel/drivers/block/virtio_blk.ko" ||
				!reflect.DeepEqual(blk.Depends, []string{"virtio", "virtio_ring"}) ||
				!reflect.DeepEqual(blk.Aliases, []string{"virtio:d00000002v*"}) {
				t.Errorf("%s: virtio_blk = %+v", name, blk)
			}
			if !reflect.DeepEqual(k.Builtin, map[string]bool{"ext4": true, "crc32c_generic": true}) {
				t.Errorf("%s: Builtin = %v", name, k.Builtin)
			}
		}
	}
}

func TestLoadDebWithModules(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.deb")
	if err := os.WriteFile(p, buildDeb(t, "amd64", ".xz", testDebFiles(t, ".zst")...), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := LoadDeb(context.Background(), p, WithModules("virtio-blk", "ext4"))
	if err != nil {
		t.Fatalf("LoadDeb(WithModules) = %v", err)
	}
	for name, m := range k.Modules {
		kept := m.Data != nil
		if want := name != "nls_iso8859_1"; kept != want {
			t.Errorf("LoadDeb(WithModules(virtio_blk)): module %s kept data = %v, want %v", name, kept, want)
		}
	}
	if _, err := k.Closure("nls-iso8859-1"); err == nil || !strings.Contains(err.Error(), "data not kept") {
		t.Errorf("Closure(dropped module) = %v, want a data not kept error", err)
	}
	_, err = LoadDeb(context.Background(), p, WithModules("virtio_gpu"))
	want := `kernel: ` + p + `: kernel 6.1.0-test-amd64: module "virtio_gpu": not in the package and not built in`
	if err == nil || err.Error() != want {
		t.Errorf("LoadDeb(WithModules(virtio_gpu)) = %v, want %q", err, want)
	}
}

func TestReadDebErrors(t *testing.T) {
	files := testDebFiles(t, "")
	arm := moduleELF(elf.EM_AARCH64, "name=arm_thing")
	dir := "./lib/modules/" + testVersion + "/"
	withFile := func(extra ...tarFile) []tarFile {
		return append(append([]tarFile{}, files...), extra...)
	}
	noImage := func() []tarFile {
		var out []tarFile
		for _, f := range files {
			if !strings.Contains(f.name, "vmlinuz") {
				out = append(out, f)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		deb  []byte
		want string
	}{
		{"not ar", []byte("PK\x03\x04"), `kernel: ar: reading magic: unexpected EOF`},
		{"no data", buildAR(arDpkg, arFile{"debian-binary", []byte("2.0\n")}),
			"kernel: not a Debian package: debian-binary or data.tar.* missing"},
		{"future format", buildAR(arDpkg, arFile{"debian-binary", []byte("3.0\n")}),
			`kernel: debian-binary: format "3.0", want 2.x`},
		{"bzip2", buildAR(arDpkg, arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar.bz2", []byte("BZh")}),
			`kernel: data.tar.bz2: unsupported compression ".bz2"`},
		{"corrupt xz", buildAR(arDpkg, arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar.xz", []byte("nonsense, not xz at all")}),
			`kernel: data.tar.xz: xz: xz: invalid header magic bytes`},
		{"no image", buildDeb(t, "amd64", "", noImage()...),
			"kernel: no boot/vmlinuz-* in data.tar: not a kernel image package"},
		{"wrong arch", buildDeb(t, "amd64", "", withFile(tarFile{name: dir + "kernel/arm_thing.ko", data: arm})...),
			"kernel: data.tar: lib/modules/6.1.0-test-amd64/kernel/arm_thing.ko: module built for arm64, but kernel/drivers/virtio/virtio_ring.ko is built for amd64"},
		{"control disagrees", buildDeb(t, "arm64", "", files...),
			"kernel: control says Architecture arm64 but module kernel/drivers/virtio/virtio_ring.ko is built for amd64"},
		{"duplicate", buildDeb(t, "amd64", "", withFile(tarFile{name: dir + "extra/virtio.ko", data: testModules()["virtio"]})...),
			`kernel: data.tar: lib/modules/6.1.0-test-amd64/extra/virtio.ko: module "virtio" also at kernel/drivers/virtio/virtio.ko`},
		{"two versions", buildDeb(t, "amd64", "", withFile(tarFile{name: "./lib/modules/9.9/x.ko", data: arm})...),
			`kernel: data.tar: lib/modules/9.9/x.ko: modules for two kernel versions, "6.1.0-test-amd64" and "9.9"`},
		{"not a module", buildDeb(t, "amd64", "", withFile(tarFile{name: dir + "kernel/bad.ko", data: []byte("#!/bin/sh")})...),
			`kernel: data.tar: lib/modules/6.1.0-test-amd64/kernel/bad.ko: not an ELF file: starts with "#!/b"`},
	} {
		_, err := ReadDeb(context.Background(), bytes.NewReader(tc.deb))
		if err == nil || err.Error() != tc.want {
			t.Errorf("ReadDeb(%s) = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestReadDebCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ReadDeb(ctx, bytes.NewReader(buildDeb(t, "amd64", ".xz", testDebFiles(t, "")...)))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ReadDeb(canceled) = %v, want context.Canceled", err)
	}
}

func TestLoadDebMissingFile(t *testing.T) {
	_, err := LoadDeb(context.Background(), "/nonexistent/k.deb")
	if err == nil || err.Error() != "kernel: open /nonexistent/k.deb: no such file or directory" {
		t.Errorf("LoadDeb(missing) = %v", err)
	}
}
