package kernel

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxDebFileBytes bounds what DebFile reads of one file; boot loaders are
// well under 1 MiB.
const maxDebFileBytes = 64 << 20

// DebFile returns the regular file at name (e.g.
// "usr/lib/systemd/boot/efi/systemd-bootx64.efi") from the data archive
// of the Debian package at path, and the package's version from its
// control file. It reads the package with the same ar and tar readers as
// LoadDeb and fails naming the package and the file when the file is
// missing.
func DebFile(ctx context.Context, path, name string) (data []byte, version string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	data, version, err = debFile(ctx, f, name)
	if err != nil {
		return nil, "", fmt.Errorf("kernel: %s: %w", path, err)
	}
	return data, version, nil
}

func debFile(ctx context.Context, r io.Reader, name string) ([]byte, string, error) {
	ar, err := newARReader(bufio.NewReaderSize(ctxReader{ctx, r}, readBufferBytes))
	if err != nil {
		return nil, "", err
	}
	var data []byte
	var version string
	for {
		m, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", err
		}
		switch {
		case strings.HasPrefix(m.Name, "control.tar"):
			b, err := tarMemberFile(ar, m.Name, "control", maxControlBytes)
			if err != nil {
				return nil, "", fmt.Errorf("%s: %w", m.Name, err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "Version:"); ok {
					version = strings.TrimSpace(v)
				}
			}
		case strings.HasPrefix(m.Name, "data.tar"):
			if data, err = tarMemberFile(ar, m.Name, name, maxDebFileBytes); err != nil {
				return nil, "", fmt.Errorf("%s: %w", m.Name, err)
			}
		}
	}
	if data == nil {
		return nil, "", fmt.Errorf("no data.tar.* member: not a Debian package")
	}
	return data, version, nil
}

// tarMemberFile reads the regular file name from the compressed tar member.
func tarMemberFile(r io.Reader, member, name string, limit int64) ([]byte, error) {
	dr, release, err := decompressor(member, r)
	if err != nil {
		return nil, err
	}
	defer release()
	tr := tar.NewReader(dr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("no file %s", name)
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg && cleanName(hdr.Name) == name {
			b, err := readEntry(tr, hdr, limit)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return b, nil
		}
	}
}
