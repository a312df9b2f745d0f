package spec

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// NobodyID is the uid and gid a service runs as when it does not ask for
// another user: unprivileged, so a compromised service cannot remount the
// root, load modules or read other services' data.
const NobodyID = 65534

// Credential is a numeric user and group.
type Credential struct {
	UID uint32
	GID uint32
}

// IsRoot reports whether c is uid 0 and gid 0, i.e. ingot-init's own
// credentials, which need no switch.
func (c Credential) IsRoot() bool { return c.UID == 0 && c.GID == 0 }

// Credential resolves User (see ParseUser).
func (s Service) Credential() (Credential, error) {
	c, err := ParseUser(s.User)
	if err != nil {
		return Credential{}, fmt.Errorf("user: %w", err)
	}
	return c, nil
}

// maxID is the largest uid or gid: (uid_t)-1 means "unchanged" to
// setresuid, so it is no id.
const maxID = 1<<32 - 2

// ParseUser resolves a user as written in a service's User: "" and
// "nobody" are NobodyID:NobodyID, "root" is 0:0, "UID" means UID:UID and
// "UID:GID" is taken as is.
func ParseUser(s string) (Credential, error) {
	switch s {
	case "", "nobody":
		return Credential{UID: NobodyID, GID: NobodyID}, nil
	case "root":
		return Credential{}, nil
	}
	us, gs, hasGID := strings.Cut(s, ":")
	uid, ok := parseID(us)
	if !ok {
		return Credential{}, fmt.Errorf("%q is not a user (root, nobody, UID or UID:GID)", s)
	}
	gid := uid
	if hasGID {
		if gid, ok = parseID(gs); !ok {
			return Credential{}, fmt.Errorf("%q: group %q is not a number", s, gs)
		}
	}
	if uid > maxID || gid > maxID {
		return Credential{}, fmt.Errorf("%q: ids go up to %d", s, uint64(maxID))
	}
	return Credential{UID: uint32(uid), GID: uint32(gid)}, nil
}

// parseID reads a decimal id; one too large to parse reads as the largest
// number, out of range.
func parseID(s string) (uint64, bool) {
	// Only plain decimal: "+1", "0x10" or " 1" are typos, not ids.
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return math.MaxUint64, true
	}
	return n, true
}
