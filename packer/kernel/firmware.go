package kernel

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Bounds of a firmware package's files that are kept.
const (
	maxFirmwareFileBytes  = 32 << 20
	maxFirmwareTotalBytes = 128 << 20
)

// FirmwareDir is where the kernel looks for firmware files.
const FirmwareDir = "/lib/firmware"

// FirmwareFile is a file or symbolic link of a firmware package.
type FirmwareFile struct {
	// Path is relative to FirmwareDir: "brcm/brcmfmac43430-sdio.bin".
	Path string
	// Data is the content of a regular file; nil for a link.
	Data []byte
	// Link is the target of a symbolic link, relative to its directory
	// and inside FirmwareDir; "" for a regular file.
	Link string
}

// LoadFirmwareDeb reads the firmware files of a Debian package (such as
// firmware-brcm80211) whose path under lib/firmware or usr/lib/firmware
// keep accepts: regular files and symbolic links, sorted by Path. A link
// must stay inside the firmware directory. It fails when keep accepts
// nothing, so a wrong package is not mistaken for one without firmware.
func LoadFirmwareDeb(ctx context.Context, file string, keep func(rel string) bool) ([]FirmwareFile, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("kernel: firmware: %w", err)
	}
	defer f.Close()
	files, err := readFirmwareDeb(ctx, f, keep)
	if err != nil {
		return nil, fmt.Errorf("kernel: firmware: %s: %w", file, err)
	}
	return files, nil
}

func readFirmwareDeb(ctx context.Context, r io.Reader, keep func(string) bool) ([]FirmwareFile, error) {
	ar, err := newARReader(bufio.NewReaderSize(ctxReader{ctx, r}, readBufferBytes))
	if err != nil {
		return nil, err
	}
	var files []FirmwareFile
	sawData := false
	for {
		m, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(m.Name, "data.tar") {
			continue
		}
		if sawData {
			return nil, fmt.Errorf("second data member %q", m.Name)
		}
		sawData = true
		if files, err = firmwareFromData(ar, m.Name, keep); err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	if !sawData {
		return nil, fmt.Errorf("not a Debian package: no data.tar.*")
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("none of the firmware files wanted is in the package")
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

func firmwareFromData(r io.Reader, member string, keep func(string) bool) ([]FirmwareFile, error) {
	dr, release, err := decompressor(member, r)
	if err != nil {
		return nil, err
	}
	defer release()
	tr := tar.NewReader(dr)
	var files []FirmwareFile
	var total int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		name := cleanName(hdr.Name)
		rel, ok := strings.CutPrefix(name, "usr/lib/firmware/")
		if !ok {
			rel, ok = strings.CutPrefix(name, "lib/firmware/")
		}
		if !ok || !keep(rel) {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			b, err := readEntry(tr, hdr, maxFirmwareFileBytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if total += int64(len(b)); total > maxFirmwareTotalBytes {
				return nil, fmt.Errorf("%s: the firmware kept exceeds %d bytes", name, maxFirmwareTotalBytes)
			}
			files = append(files, FirmwareFile{Path: rel, Data: b})
		case tar.TypeSymlink:
			target := hdr.Linkname
			resolved := path.Join(path.Dir(rel), target)
			if path.IsAbs(target) || resolved == ".." || strings.HasPrefix(resolved, "../") {
				return nil, fmt.Errorf("%s: link to %q leaves the firmware directory", name, target)
			}
			files = append(files, FirmwareFile{Path: rel, Link: target})
		}
	}
}
