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
