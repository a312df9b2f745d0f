package squashfs

import (
	"encoding/binary"
	"strings"
	"testing"
)

func valid() Superblock {
	return Superblock{
		Inodes: 7, MkfsTime: 1577836800, BlockSize: 128 << 10, Fragments: 2,
		Compressor: CompressorZstd, BlockLog: 17, Flags: FlagDuplicates | FlagExportable, IDs: 1,
		RootInode: 0x1234, BytesUsed: 5000, IDTableStart: 4990, XattrIDTableStart: 0xffffffffffffffff,
		InodeTableStart: 4000, DirTableStart: 4500, FragmentTableStart: 4800, ExportTableStart: 4900,
	}
}

func TestRoundTrip(t *testing.T) {
	want := valid()
	b := want.Encode()
	if len(b) != SuperblockBytes || string(b[:4]) != "hsqs" {
		t.Fatalf("Encode() = %d bytes starting %q, want %d starting hsqs", len(b), b[:4], SuperblockBytes)
	}
	// The offsets the kernel reads (squashfs_fs.h).
	le := binary.LittleEndian
	if le.Uint16(b[28:]) != 4 || le.Uint16(b[30:]) != 0 || le.Uint64(b[40:]) != 5000 || le.Uint64(b[88:]) != 4900 {
		t.Errorf("Encode() puts version, bytes_used or export table at the wrong offsets: % x", b)
	}
	got, err := Parse(b)
	if err != nil || got != want {
		t.Errorf("Parse(Encode(%+v)) = %+v, %v", want, got, err)
	}
	if p := got.PaddedBytes(); p != 8192 {
		t.Errorf("PaddedBytes() with bytes_used 5000 = %d, want 8192", p)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(b []byte)
		want   string
	}{
		{"short", nil, "too few"},
		{"magic", func(b []byte) { copy(b, "ELF!") }, "offset 0: magic"},
		{"version", func(b []byte) { b[28] = 3 }, "offset 28: major version 3"},
		{"block size", func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 3000) }, "offset 12: block size 3000"},
		{"block size too big", func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 2<<20) }, "offset 12: block size"},
		{"block log", func(b []byte) { b[22] = 16 }, "offset 22: block log 16"},
		{"compressor", func(b []byte) { b[20] = 9 }, "offset 20: unknown compressor 9"},
		{"bytes_used", func(b []byte) { binary.LittleEndian.PutUint64(b[40:], 95) }, "offset 40: bytes_used 95"},
	} {
		sb := valid()
		b := sb.Encode()
		if tc.change == nil {
			b = b[:SuperblockBytes-1]
		} else {
			tc.change(b)
		}
		if _, err := Parse(b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse() = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestParseWithin(t *testing.T) {
	sb := valid()
	b := sb.Encode()
	if _, err := ParseWithin(b, int64(sb.BytesUsed)); err != nil {
		t.Errorf("ParseWithin(bytes_used %d, %d) = %v, want nil", sb.BytesUsed, sb.BytesUsed, err)
	}
	for _, size := range []int64{int64(sb.BytesUsed) - 1, -1} {
		if _, err := ParseWithin(b, size); err == nil || !strings.Contains(err.Error(), "offset 40: bytes_used 5000 does not fit") {
			t.Errorf("ParseWithin(bytes_used %d, %d) = %v, want an error naming bytes_used at offset 40", sb.BytesUsed, size, err)
		}
	}
	if _, err := ParseWithin(make([]byte, SuperblockBytes), 1<<20); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("ParseWithin(zeros) = %v, want Parse's magic error", err)
	}
}
