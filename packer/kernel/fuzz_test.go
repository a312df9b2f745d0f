package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"io"
	"testing"
)

func FuzzARReader(f *testing.F) {
	files := []arFile{{"debian-binary", []byte("2.0\n")}, {"a-rather-long-member-name", []byte("abc")}}
	f.Add(buildAR(arDpkg, files[0]))
	f.Add(buildAR(arGNU, files...))
	f.Add(buildAR(arBSD, files...))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := newARReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for range 1000 {
			m, err := a.Next()
			if err != nil {
				return
			}
			n, err := io.Copy(io.Discard, a)
			if err == nil && n != m.Size {
				t.Fatalf("member %q: read %d bytes without error, header says %d", m.Name, n, m.Size)
			}
		}
	})
}

func FuzzModinfo(f *testing.F) {
	f.Add(moduleELF(elf.EM_X86_64, "name=virtio_pci", "depends=virtio_ring,virtio"))
	f.Add(moduleELF(elf.EM_AARCH64))
	f.Add([]byte("name=x\x00depends=a,b\x00alias=y"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseModinfo(b)
		readModinfo(b)
	})
}

func FuzzReadDeb(f *testing.F) {
	// Uncompressed members keep the fuzzer's mutations meaningful.
	t := &testing.T{}
	f.Add(buildDeb(t, "amd64", "", testDebFiles(t, "")...))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ReadDeb(context.Background(), bytes.NewReader(b))
		if err == nil {
			k.Closure("virtio_blk")
		}
	})
}
