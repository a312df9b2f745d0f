package oci

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ingotdev/ingot/packer/rootfs"
)

func accountTree(t *testing.T) *rootfs.Tree {
	t.Helper()
	tree := rootfs.New(0)
	file := func(p, body string) {
		if err := tree.Add(p, rootfs.Entry{Kind: rootfs.KindFile, Mode: 0o644, Size: int64(len(body)), Content: rootfs.Bytes(body)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"/etc", "/usr", "/usr/share", "/usr/share/base"} {
		if err := tree.MkdirAll(d, 0o755, 0); err != nil {
			t.Fatal(err)
		}
	}
	file("/usr/share/base/passwd", "root:x:0:0:root:/root:/bin/sh\n# comment\nwww:x:33:33::/var/www:/bin/false\npg:x:70:70::/:/bin/sh\nbad:x:x:1::/:\n")
	// /etc/passwd reaches its file through an absolute and a relative link.
	if err := tree.Add("/etc/passwd", rootfs.Entry{Kind: rootfs.KindSymlink, Target: "../usr/share/../share/base/passwd"}); err != nil {
		t.Fatal(err)
	}
	file("/etc/group", "root:x:0:\nwww:x:33:\nweb:x:500:www,pg\nlog:x:4:www\ndup:x:33:www\n")
	return tree
}

func TestResolveUser(t *testing.T) {
	tree := accountTree(t)
	for _, tt := range []struct {
		in   string
		want User
	}{
		{"", User{}},
		{"root", User{}},
		{"www", User{UID: 33, GID: 33, AdditionalGIDs: []uint32{4, 500}}},
		{"33", User{UID: 33, GID: 33, AdditionalGIDs: []uint32{4, 500}}},
		{"www:web", User{UID: 33, GID: 500, AdditionalGIDs: []uint32{4, 33}}},
		{"pg:7", User{UID: 70, GID: 7, AdditionalGIDs: []uint32{500}}},
		{"1234", User{UID: 1234}},
		{"1234:99", User{UID: 1234, GID: 99}},
	} {
		got, err := ResolveUser(tree, tt.in)
		if err != nil {
			t.Errorf("ResolveUser(%q) = %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ResolveUser(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"nobody", `user "nobody": not in the image's /etc/passwd`},
		{"www:nogroup", `group "nogroup": not in the image's /etc/group`},
		{"bad", "bad uid"},
		{":1", "empty user"},
		{"www:", "empty group"},
	} {
		if _, err := ResolveUser(tree, tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ResolveUser(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
	// An image without /etc/passwd still runs numeric users.
	if u, err := ResolveUser(rootfs.New(0), "5:6"); err != nil || u.UID != 5 || u.GID != 6 {
		t.Errorf("ResolveUser(no passwd, 5:6) = %v, %v", u, err)
	}
}

func TestReadFileLinkLoop(t *testing.T) {
	tree := rootfs.New(0)
	tree.Add("/a", rootfs.Entry{Kind: rootfs.KindSymlink, Target: "/b"})
	tree.Add("/b", rootfs.Entry{Kind: rootfs.KindSymlink, Target: "a"})
	if _, err := ReadFile(tree, "/a", 10); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("ReadFile(loop) = %v", err)
	}
}
