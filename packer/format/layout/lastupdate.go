package layout

import "strings"

// LastUpdateFile, on the boot partition, records the last update and how
// it ended (mgmt.LastUpdate as JSON), for status, the web page and the
// metrics. It is informational: no loader reads it, and a missing, torn
// or oversized file reads as "no record".
const LastUpdateFile = "last-update.json"

// MaxLastUpdateBytes bounds LastUpdateFile when it is read; a record is a
// few hundred bytes (a failure reason is capped by slot.json's).
const MaxLastUpdateBytes = 4096

// LastUpdateBytes is the size LastUpdateFile is written at: one sector,
// the record padded with spaces, so that the agent rewrites it in place
// (slot.WriteFile) and never allocates or frees clusters for it. A new
// file on a mounted vfat that a power cut catches before its FAT entries
// are on disk makes the kernel set the boot partition read-only when the
// file is later removed; the packer therefore writes EmptyLastUpdate into
// every image.
const LastUpdateBytes = 512

// EmptyLastUpdate is LastUpdateFile holding no record: LastUpdateBytes of
// spaces ending in a newline.
func EmptyLastUpdate() []byte {
	b := []byte(strings.Repeat(" ", LastUpdateBytes))
	b[len(b)-1] = '\n'
	return b
}

// CmdlineBuild returns the ParamBuild value of a slot's command line (the
// content of its CmdlineFile), or "" when it has none.
func CmdlineBuild(cmdline string) string {
	id := ""
	for _, w := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(w, ParamBuild+"="); ok {
			id = v
		}
	}
	return id
}
