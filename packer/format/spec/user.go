package spec

import (
	"fmt"
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

// Credential resolves User: "" and "nobody" are NobodyID:NobodyID, "root"
// is 0:0, "UID" means UID:UID and "UID:GID" is taken as is.
func (s Service) Credential() (Credential, error) {
	switch s.User {
	case "", "nobody":
		return Credential{UID: NobodyID, GID: NobodyID}, nil
	case "root":
		return Credential{}, nil
	}
	us, gs, hasGID := strings.Cut(s.User, ":")
	uid, err := parseID(us)
	if err != nil {
		return Credential{}, fmt.Errorf("user: %q: uid: %w", s.User, err)
	}
	gid := uid
	if hasGID {
		if gid, err = parseID(gs); err != nil {
			return Credential{}, fmt.Errorf("user: %q: gid: %w", s.User, err)
		}
	}
	return Credential{UID: uid, GID: gid}, nil
}

func parseID(s string) (uint32, error) {
	// Only plain decimal: "+1", "0x10" or " 1" are typos, not ids.
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("want a decimal number or root/nobody")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 { // (uid_t)-1 means "unchanged" to setresuid
		return 0, fmt.Errorf("%s is out of range", s)
	}
	return uint32(n), nil
}
