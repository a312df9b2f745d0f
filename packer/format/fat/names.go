package fat

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

const (
	shortNameBytes = 11 // 8 + 3, space padded, no dot
	maxLongUnits   = 255
	lfnUnitsPerEnt = 13
	lfnLastFlag    = 0x40
	lfnOrdMask     = 0x3f
)

// ShortName is the on-disk form of an 8.3 name: 8 and 3 bytes, space
// padded, no dot.
type ShortName [shortNameBytes]byte

// invalidLongChars may not appear in any FAT name.
const invalidLongChars = "\"*/:<>?\\|"

// invalidShortChars are valid in long names but not in 8.3 names.
const invalidShortChars = "+,;=[]"

// CheckName rejects names no FAT implementation would accept, and names
// that Windows and Linux would silently change (trailing dots and spaces).
func CheckName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("invalid name %q", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("name %q is not valid UTF-8", name)
	case strings.HasSuffix(name, ".") || strings.HasSuffix(name, " "):
		return fmt.Errorf("name %q ends with a dot or space", name)
	case len(utf16.Encode([]rune(name))) > maxLongUnits:
		return fmt.Errorf("name %q is longer than %d UTF-16 units", name, maxLongUnits)
	}
	for _, r := range name {
		if r < 0x20 || strings.ContainsRune(invalidLongChars, r) {
			return fmt.Errorf("name %q contains %q, not allowed in FAT names", name, r)
		}
	}
	return nil
}

// basisName derives the 8.3 basis name of a long name (Microsoft FAT spec,
// "Basis-Name Generation Algorithm"): upper-case, spaces and leading dots
// dropped, up to 8 characters before the last dot and 3 after it, and '_'
// for characters an 8.3 name cannot hold. This writer assumes an ASCII OEM
// code page, so every non-ASCII character becomes '_'.
func basisName(long string) (base, ext string) {
	conv := func(r rune) byte {
		switch {
		case r >= 'a' && r <= 'z':
			return byte(r - 'a' + 'A')
		case r < 0x80 && r > 0x20 && !strings.ContainsRune(invalidShortChars, r):
			return byte(r)
		}
		return '_'
	}
	name := strings.TrimLeft(strings.ReplaceAll(long, " ", ""), ".")
	primary, extension := name, ""
	if dot := strings.LastIndexByte(name, '.'); dot >= 0 {
		primary, extension = name[:dot], name[dot+1:]
	}
	var b, e []byte
	for _, r := range primary {
		if r != '.' && len(b) < 8 {
			b = append(b, conv(r))
		}
	}
	for _, r := range extension {
		if len(e) < 3 {
			e = append(e, conv(r))
		}
	}
	if len(b) == 0 {
		b = []byte{'_'}
	}
	return string(b), string(e)
}

// fits reports whether the basis represents the long name exactly up to
// case, in which case the 8.3 name needs no numeric tail.
func fits(long, base, ext string) bool {
	display := base
	if ext != "" {
		display += "." + ext
	}
	for _, r := range long {
		if r >= 0x80 || strings.ContainsRune(invalidShortChars, r) {
			return false
		}
	}
	return display == strings.ToUpper(long)
}

// PackShort returns the on-disk form of the 8.3 name base.ext.
func PackShort(base, ext string) ShortName {
	var s ShortName
	for i := range s {
		s[i] = ' '
	}
	copy(s[:8], base)
	copy(s[8:], ext)
	return s
}

// withTail applies the numeric tail ~n to a basis name.
func withTail(base, ext string, n int) ShortName {
	tail := "~" + strconv.Itoa(n)
	if len(base)+len(tail) > 8 {
		base = base[:8-len(tail)]
	}
	return PackShort(base+tail, ext)
}

// ShortNames assigns 8.3 names to the long names of one directory, in
// order, deterministically, and says which need long-name entries. Exact names are reserved first so that a
// generated alias never takes a name the user asked for.
func ShortNames(longs []string) (short []ShortName, needLFN []bool, err error) {
	short = make([]ShortName, len(longs))
	needLFN = make([]bool, len(longs))
	used := map[ShortName]bool{}
	nextTail := map[string]int{}
	type basis struct{ base, ext string }
	bases := make([]basis, len(longs))
	for i, l := range longs {
		b, e := basisName(l)
		bases[i] = basis{b, e}
		// Upper-casing alone is not lossy: "vmlinuz" gets the 8.3 name
		// VMLINUZ (no tail) plus a long-name entry, as Linux does.
		if fits(l, b, e) && l == strings.ToUpper(l) {
			short[i] = PackShort(b, e)
			used[short[i]] = true
		} else {
			needLFN[i] = true
		}
	}
	for i, l := range longs {
		if !needLFN[i] {
			continue
		}
		b := bases[i]
		if s := PackShort(b.base, b.ext); fits(l, b.base, b.ext) && !used[s] {
			short[i] = s
			used[s] = true
			continue
		}
		// Resume where the last name with this basis stopped, so that a
		// directory of thousands of similar names is not quadratic.
		const maxTail = 999999
		key := b.base + "." + b.ext
		for n := max(nextTail[key], 1); ; n++ {
			if n > maxTail {
				return nil, nil, fmt.Errorf("name %q: no free 8.3 alias", l)
			}
			if s := withTail(b.base, b.ext, n); !used[s] {
				short[i] = s
				used[s] = true
				nextTail[key] = n + 1
				break
			}
		}
	}
	return short, needLFN, nil
}

// shortChecksum is the checksum a long-name entry carries of its 8.3 name.
func shortChecksum(s []byte) byte {
	var sum byte
	for _, c := range s[:shortNameBytes] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// LongNameEntries returns the long-name directory entries of name, whose
// 8.3 name is short, in on-disk order (last part first), each 32 bytes.
func LongNameEntries(name string, short ShortName) []byte {
	units := utf16.Encode([]rune(name))
	n := (len(units) + lfnUnitsPerEnt - 1) / lfnUnitsPerEnt
	// Terminate with NUL when there is room, pad the rest with 0xFFFF.
	padded := make([]uint16, n*lfnUnitsPerEnt)
	for i := range padded {
		switch {
		case i < len(units):
			padded[i] = units[i]
		case i == len(units):
			padded[i] = 0
		default:
			padded[i] = 0xFFFF
		}
	}
	sum := shortChecksum(short[:])
	out := make([]byte, n*DirEntryBytes)
	for k := 0; k < n; k++ {
		ord := n - k // on disk the last part comes first
		e := out[k*DirEntryBytes:][:DirEntryBytes]
		e[0] = byte(ord)
		if k == 0 {
			e[0] |= lfnLastFlag
		}
		e[11] = attrLongName
		e[13] = sum
		part := padded[(ord-1)*lfnUnitsPerEnt:][:lfnUnitsPerEnt]
		for j, u := range part {
			off := lfnUnitOffsets[j]
			e[off] = byte(u)
			e[off+1] = byte(u >> 8)
		}
	}
	return out
}

// lfnUnitOffsets are where the 13 UTF-16 units sit in a long-name entry.
var lfnUnitOffsets = [lfnUnitsPerEnt]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

// shortDisplay renders an on-disk 8.3 name for listing, applying the
// Windows NT lower-case flags that Linux and Windows write for names like
// "readme.txt". Bytes from 0x80 up are read as code page 437, the default
// of DOS, Windows and Linux.
func shortDisplay(s []byte, ntRes byte) string {
	conv := func(b []byte, lower bool) string {
		b = []byte(strings.TrimRight(string(b), " "))
		var sb strings.Builder
		for i, c := range b {
			if i == 0 && c == 0x05 {
				c = 0xE5 // an initial 0xE5 is stored as 0x05
			}
			r := rune(c)
			if c >= 0x80 {
				r = []rune(cp437High)[c-0x80]
			}
			if lower {
				r = unicode.ToLower(r)
			}
			sb.WriteRune(r)
		}
		return sb.String()
	}
	base := conv(s[:8], ntRes&ntLowerBase != 0)
	ext := conv(s[8:11], ntRes&ntLowerExt != 0)
	if ext == "" {
		return base
	}
	return base + "." + ext
}

// cp437High is code page 437 from 0x80 to 0xFF, 128 runes.
const cp437High = "" +
	"ÇüéâäàåçêëèïîìÄÅ" +
	"ÉæÆôöòûùÿÖÜ¢£¥₧ƒ" +
	"áíóúñÑªº¿⌐¬½¼¡«»" +
	"░▒▓│┤╡╢╖╕╣║╗╝╜╛┐" +
	"└┴┬├─┼╞╟╚╔╩╦╠═╬╧" +
	"╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀" +
	"αßΓπΣσµτΦΘΩδ∞φε∩" +
	"≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0"
