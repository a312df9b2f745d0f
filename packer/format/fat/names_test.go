package fat

import (
	"strings"
	"testing"
)

func TestShortNames(t *testing.T) {
	for _, tc := range []struct {
		longs   []string
		want    []string // 8.3 names as "BASE    EXT"
		wantLFN []bool
	}{
		{[]string{"README.TXT"}, []string{"README  TXT"}, []bool{false}},
		{[]string{"vmlinuz"}, []string{"VMLINUZ    "}, []bool{true}},
		{[]string{"cmdline.txt"}, []string{"CMDLINE TXT"}, []bool{true}},
		{[]string{"slot.json"}, []string{"SLOT~1  JSO"}, []bool{true}},
		{[]string{"bcm2710-rpi-3-b.dtb"}, []string{"BCM271~1DTB"}, []bool{true}},
		{[]string{"bcm2710-rpi-3-b-plus.dtb", "bcm2710-rpi-3-b.dtb"}, []string{"BCM271~1DTB", "BCM271~2DTB"}, []bool{true, true}},
		{[]string{".bashrc"}, []string{"BASHRC~1   "}, []bool{true}},
		{[]string{"a.b.c"}, []string{"AB~1    C  "}, []bool{true}},
		{[]string{"a b.txt"}, []string{"AB~1    TXT"}, []bool{true}},
		{[]string{"grüße.txt"}, []string{"GR__E~1 TXT"}, []bool{true}},
		{[]string{"x+y.c"}, []string{"X_Y~1   C  "}, []bool{true}},
		{[]string{"Makefile"}, []string{"MAKEFILE   "}, []bool{true}},
		{[]string{"😀"}, []string{"_~1        "}, []bool{true}},
		// A generated alias never takes a name given exactly.
		{[]string{"slot.json", "SLOT~1.JSO"}, []string{"SLOT~2  JSO", "SLOT~1  JSO"}, []bool{true, false}},
		{[]string{"FOO", "foo.x"}, []string{"FOO        ", "FOO     X  "}, []bool{false, true}},
	} {
		short, needLFN, err := ShortNames(tc.longs)
		if err != nil {
			t.Errorf("ShortNames(%q) = %v", tc.longs, err)
			continue
		}
		for i := range tc.longs {
			if string(short[i][:]) != tc.want[i] || needLFN[i] != tc.wantLFN[i] {
				t.Errorf("ShortNames(%q)[%d] = %q, LFN %v, want %q, LFN %v", tc.longs, i, short[i][:], needLFN[i], tc.want[i], tc.wantLFN[i])
			}
		}
	}
}

func TestShortNamesManyCollisions(t *testing.T) {
	var longs []string
	for i := 0; i < 120; i++ {
		longs = append(longs, "longname-"+strings.Repeat("x", i)+".dat")
	}
	short, _, err := ShortNames(longs)
	if err != nil {
		t.Fatalf("ShortNames: %v", err)
	}
	seen := map[string]bool{}
	for i, s := range short {
		if seen[string(s[:])] {
			t.Fatalf("ShortNames: %q given twice", s[:])
		}
		seen[string(s[:])] = true
		if i == 9 && string(s[:]) != "LONGN~10DAT" {
			t.Errorf("ShortNames()[9] = %q, want LONGN~10DAT", s[:])
		}
		if i == 99 && string(s[:]) != "LONG~100DAT" {
			t.Errorf("ShortNames()[99] = %q, want LONG~100DAT", s[:])
		}
	}
}

func TestCheckLongName(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a:b", "a*", "a?", "a\\b", "a|b", "a<", "a>", "a\"", "tab\t", "trail.", "trail ", "\xff", strings.Repeat("x", 256)} {
		if err := CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) = nil, want error", bad)
		}
	}
	for _, good := range []string{"a", ".hidden", "a b", "x+y,z;w=[1]", "日本語", strings.Repeat("x", 255), strings.Repeat("😀", 127)} {
		if err := CheckName(good); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", good, err)
		}
	}
}

func TestShortChecksum(t *testing.T) {
	// mcopy of "slot.json" onto a mkfs.vfat volume writes the same alias
	// and this checksum in its long-name entry.
	s := PackShort("SLOT~1", "JSO")
	if got, want := shortChecksum(s[:]), byte(0xc6); got != want {
		t.Errorf("shortChecksum(%q) = %#x, want %#x", s[:], got, want)
	}
}

func TestLFNRoundTrip(t *testing.T) {
	for _, name := range []string{"a", "abcdefghijklm", "abcdefghijklmn", strings.Repeat("z", 26), strings.Repeat("y", 255), "grüße 😀 日本"} {
		short := PackShort("X~1", "")
		raw := LongNameEntries(name, short)
		var l longName
		for i := 0; i < len(raw); i += DirEntryBytes {
			l.add(raw[i : i+DirEntryBytes])
		}
		if got := l.name(short[:]); got != name {
			t.Errorf("LFN round trip of %q = %q", name, got)
		}
		other := PackShort("Y~1", "")
		if got := l.name(other[:]); got != "" {
			t.Errorf("LFN of %q matched a different 8.3 name: %q", name, got)
		}
	}
}

func TestShortDisplay(t *testing.T) {
	if n := len([]rune(cp437High)); n != 128 {
		t.Fatalf("cp437High has %d runes, want 128", n)
	}
	for _, tc := range []struct {
		raw   string
		ntRes byte
		want  string
	}{
		{"README  TXT", 0, "README.TXT"},
		{"README  TXT", ntLowerBase, "readme.TXT"},
		{"README  TXT", ntLowerBase | ntLowerExt, "readme.txt"},
		{"VMLINUZ    ", 0, "VMLINUZ"},
		{"GR\x9a\xe1E   TXT", ntLowerBase | ntLowerExt, "grüße.txt"},
		{"\x05BC     TXT", 0, "σBC.TXT"}, // 0x05 stands for 0xE5
	} {
		if got := shortDisplay([]byte(tc.raw), tc.ntRes); got != tc.want {
			t.Errorf("shortDisplay(%q, %#x) = %q, want %q", tc.raw, tc.ntRes, got, tc.want)
		}
	}
}
