package oci

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/ingotdev/ingot/packer/rootfs"
)

// maxSymlinkHops is how many symbolic links ResolveUser follows to find
// /etc/passwd or /etc/group, as Linux's MAXSYMLINKS.
const maxSymlinkHops = 40

// maxAccountFileBytes bounds /etc/passwd and /etc/group.
const maxAccountFileBytes = 4 << 20

// User is a numeric identity inside an image.
type User struct {
	UID, GID uint32
	// AdditionalGIDs are the groups of /etc/group that list the user,
	// sorted, without GID.
	AdditionalGIDs []uint32
}

// ResolveUser turns a user spec as docker takes it ("", "name", "uid",
// "name:group", "uid:gid", group by name or number) into numbers using
// the /etc/passwd and /etc/group of the flattened image tree. "" is root.
// A numeric user missing from passwd gets group 0, as with docker; a name
// missing from passwd is an error.
func ResolveUser(t *rootfs.Tree, spec string) (User, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" && !hasGroup {
		userPart = "0"
	}
	if userPart == "" {
		return User{}, fmt.Errorf("oci: user %q: empty user name", spec)
	}
	passwd, err := readAccounts(t, "/etc/passwd", 7)
	if err != nil {
		return User{}, err
	}
	var u User
	var userName string
	found := false
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(n)
		for _, f := range passwd {
			if id, err := strconv.ParseUint(f[2], 10, 32); err == nil && uint32(id) == u.UID {
				userName, found = f[0], true
				if gid, err := strconv.ParseUint(f[3], 10, 32); err == nil {
					u.GID = uint32(gid)
				}
				break
			}
		}
	} else {
		for _, f := range passwd {
			if f[0] != userPart {
				continue
			}
			uid, err1 := strconv.ParseUint(f[2], 10, 32)
			gid, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				return User{}, fmt.Errorf("oci: user %q: /etc/passwd entry has a bad uid or gid", userPart)
			}
			u.UID, u.GID, userName, found = uint32(uid), uint32(gid), f[0], true
			break
		}
		if !found {
			return User{}, fmt.Errorf("oci: user %q: not in the image's /etc/passwd", userPart)
		}
	}
	groups, err := readAccounts(t, "/etc/group", 4)
	if err != nil {
		return User{}, err
	}
	if hasGroup {
		if groupPart == "" {
			return User{}, fmt.Errorf("oci: user %q: empty group", spec)
		}
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(n)
		} else {
			ok := false
			for _, g := range groups {
				if g[0] == groupPart {
					gid, err := strconv.ParseUint(g[2], 10, 32)
					if err != nil {
						return User{}, fmt.Errorf("oci: group %q: /etc/group entry has a bad gid", groupPart)
					}
					u.GID, ok = uint32(gid), true
					break
				}
			}
			if !ok {
				return User{}, fmt.Errorf("oci: group %q: not in the image's /etc/group", groupPart)
			}
		}
	}
	if found {
		seen := map[uint32]bool{u.GID: true}
		for _, g := range groups {
			gid, err := strconv.ParseUint(g[2], 10, 32)
			if err != nil || seen[uint32(gid)] {
				continue
			}
			for _, m := range strings.Split(g[3], ",") {
				if m == userName {
					seen[uint32(gid)] = true
					u.AdditionalGIDs = append(u.AdditionalGIDs, uint32(gid))
					break
				}
			}
		}
		slices.Sort(u.AdditionalGIDs)
	}
	return u, nil
}

// readAccounts reads a colon-separated account file, keeping lines with
// at least fields fields. A missing file reads as empty.
func readAccounts(t *rootfs.Tree, p string, fields int) ([][]string, error) {
	data, err := ReadFile(t, p, maxAccountFileBytes)
	if err != nil {
		if err == errNoFile {
			return nil, nil
		}
		return nil, err
	}
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(nil, maxAccountFileBytes)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) >= fields {
			out = append(out, f)
		}
	}
	return out, nil
}

var errNoFile = fmt.Errorf("no such file")

// ReadFile reads a file of an image tree, following symbolic links and
// hard links inside the tree as the container would see them: absolute
// link targets are relative to the image root, ".." stops at the root.
func ReadFile(t *rootfs.Tree, p string, limit int64) ([]byte, error) {
	e, err := lookupFollow(t, p)
	if err != nil {
		return nil, err
	}
	if e.Kind != rootfs.KindFile {
		return nil, fmt.Errorf("oci: %s: is a %s", p, e.Kind)
	}
	if e.Size > limit {
		return nil, fmt.Errorf("oci: %s: %d bytes, more than %d", p, e.Size, limit)
	}
	if e.Size == 0 {
		return nil, nil
	}
	rc, err := e.Content.Open()
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", p, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", p, err)
	}
	return b, nil
}

// lookupFollow resolves p component by component, following symlinks.
func lookupFollow(t *rootfs.Tree, p string) (rootfs.Entry, error) {
	hops := 0
	todo := strings.Split(strings.Trim(p, "/"), "/")
	cur := "/"
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := rootfs.Join(cur, name)
		e, ok := t.Get(next)
		if !ok {
			return rootfs.Entry{}, errNoFile
		}
		switch e.Kind {
		case rootfs.KindSymlink:
			hops++
			if hops > maxSymlinkHops {
				return rootfs.Entry{}, fmt.Errorf("oci: %s: too many levels of symbolic links", p)
			}
			if strings.HasPrefix(e.Target, "/") {
				cur = "/"
			}
			todo = append(strings.Split(e.Target, "/"), todo...)
			continue
		case rootfs.KindHardlink:
			if e, ok = t.Get(e.Target); !ok {
				return rootfs.Entry{}, errNoFile
			}
		}
		if len(todo) == 0 {
			return e, nil
		}
		cur = next
	}
	e, _ := t.Get(cur)
	return e, nil
}
