package kernel

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// readAR lists an archive as "name=data" lines.
func readAR(b []byte) (string, error) {
	a, err := newARReader(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	var out []string
	for {
		m, err := a.Next()
		if err == io.EOF {
			return strings.Join(out, " "), nil
		}
		if err != nil {
			return strings.Join(out, " "), err
		}
		data, err := io.ReadAll(a)
		if err != nil {
			return strings.Join(out, " "), err
		}
		if int64(len(data)) != m.Size {
			return "", fmt.Errorf("member %q: read %d bytes, header says %d", m.Name, len(data), m.Size)
		}
		out = append(out, m.Name+"="+string(data))
	}
}

func TestARReader(t *testing.T) {
	files := []arFile{
		{"debian-binary", []byte("2.0\n")},
		{"odd", []byte("abc")},
		{"a-rather-long-member-name.tar.xz", []byte("long")},
		{"empty", nil},
		{"last", []byte("z")},
	}
	const want = "debian-binary=2.0\n odd=abc a-rather-long-member-name.tar.xz=long empty= last=z"
	for _, tc := range []struct {
		name   string
		flavor arFlavor
	}{{"dpkg", arDpkg}, {"gnu", arGNU}, {"bsd", arBSD}} {
		b := buildAR(tc.flavor, files...)
		if tc.flavor == arDpkg {
			// dpkg's short names cannot hold the long one; drop it.
			b = buildAR(tc.flavor, files[0], files[1], files[3], files[4])
		}
		got, err := readAR(b)
		w := want
		if tc.flavor == arDpkg {
			w = "debian-binary=2.0\n odd=abc empty= last=z"
		}
		if err != nil || got != w {
			t.Errorf("readAR(%s archive) = %q, %v; want %q", tc.name, got, err, w)
		}
	}

	// A member skipped without reading must not disturb the next.
	a, err := newARReader(bytes.NewReader(buildAR(arGNU, files...)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		m, err := a.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next after skipping: %v", err)
		}
		names = append(names, m.Name)
	}
	if got := strings.Join(names, ","); got != "debian-binary,odd,a-rather-long-member-name.tar.xz,empty,last" {
		t.Errorf("names when skipping data = %s", got)
	}
}

func TestARReaderErrors(t *testing.T) {
	good := buildAR(arDpkg, arFile{"debian-binary", []byte("2.0\n")}, arFile{"x", []byte("abc")})
	hdr := func(name, size, end string) string {
		return fmt.Sprintf("%-16s%-12d%-6d%-6d%-8s%-10s%s", name, 0, 0, 0, "100644", size, end)
	}
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "ar: reading magic: unexpected EOF"},
		{"bad magic", "!<arch>X", `ar: magic "!<arch>X", want "!<arch>\n"`},
		{"short header", arMagic + "debian", "ar: member 0 at offset 8: header: unexpected EOF"},
		{"bad terminator", arMagic + hdr("x", "1", "XX"), "ar: member 0 at offset 8: header ends with \"XX\", want \"`\\n\""},
		{"bad size", arMagic + hdr("x", "-1", "`\n"), `ar: member 0 at offset 8: size field "-1" is not a decimal number`},
		{"hex size", arMagic + hdr("x", "0x10", "`\n"), `ar: member 0 at offset 8: size field "0x10" is not a decimal number`},
		{"truncated data", string(good[:len(good)-3]), `ar: member 1 "x": unexpected EOF (2 bytes missing)`},
		{"long name without table", arMagic + hdr("/0", "0", "`\n"), "ar: member 0 at offset 8: long name at table offset 0: no such entry in a table of 0 bytes"},
		{"bsd name too long", arMagic + hdr("#1/9", "3", "`\n") + "abc", `ar: member 0 at offset 8: BSD name length "9" invalid for a member of 3 bytes`},
		{"empty name", arMagic + hdr("/", "0", "`\n") + hdr("", "0", "`\n"), "ar: member 1 at offset 68: empty member name"},
	} {
		got, err := readAR([]byte(tc.in))
		if err == nil || err.Error() != tc.want {
			t.Errorf("readAR(%s) = %q, %v; want error %q", tc.name, got, err, tc.want)
		}
	}
	// Some writers leave out the padding byte after an odd last member.
	if got, err := readAR(good[:len(good)-1]); err != nil || got != "debian-binary=2.0\n x=abc" {
		t.Errorf("readAR(no final padding) = %q, %v; want both members", got, err)
	}
}
