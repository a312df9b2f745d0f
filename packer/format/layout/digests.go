package layout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
)

// DigestsFile, on the boot partition, records the size and SHA-256 of
// the files each slot boots with, keyed by their paths on the partition
// ("vmlinuz.b", "slot-b/overlays/x.dtbo"), so the agent can say what a
// slot boots with without reading ~18 MB of kernel and initramfs on every
// update. The packer writes it for the files of both slots; the agent
// rewrites it (atomically, by rename) when it puts new boot files in
// place, and repairs it when an entry is missing or its size is not the
// file's. Boot loaders never read it.
const DigestsFile = "digests.json"

// MaxDigestsBytes bounds DigestsFile when it is read: a Pi's two slot
// directories with a few hundred device trees need tens of KiB.
const MaxDigestsBytes = 1 << 20

// FileDigest is what DigestsFile says of one file.
type FileDigest struct {
	// Size is the file's length in bytes when SHA256 was taken: an entry
	// whose size is not the file's is stale.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the file's content.
	SHA256 string `json:"sha256"`
}

// Digests is the content of DigestsFile.
type Digests struct {
	Files map[string]FileDigest `json:"files"`
}

// ParseDigests decodes DigestsFile strictly: every path valid for io/fs,
// every size non-negative and every SHA-256 64 lowercase hex digits.
func ParseDigests(data []byte) (Digests, error) {
	var d Digests
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Digests{}, fmt.Errorf("layout: %s: %w", DigestsFile, err)
	}
	for p, fd := range d.Files {
		switch {
		case !fs.ValidPath(p) || p == ".":
			return Digests{}, fmt.Errorf("layout: %s: path %q is not a file path", DigestsFile, p)
		case fd.Size < 0:
			return Digests{}, fmt.Errorf("layout: %s: %s: size %d is negative", DigestsFile, p, fd.Size)
		case !lowerHex(fd.SHA256, 64):
			return Digests{}, fmt.Errorf("layout: %s: %s: sha256 %q is not 64 lowercase hex digits", DigestsFile, p, fd.SHA256)
		}
	}
	if d.Files == nil {
		d.Files = map[string]FileDigest{}
	}
	return d, nil
}

// Marshal encodes d as DigestsFile, one entry a line, sorted by path.
func (d Digests) Marshal() []byte {
	if d.Files == nil {
		d.Files = map[string]FileDigest{}
	}
	b, _ := json.MarshalIndent(d, "", "  ") // strings and integers only
	return append(b, '\n')
}

func lowerHex(s string, n int) bool {
	return len(s) == n && strings.Trim(s, "0123456789abcdef") == ""
}
