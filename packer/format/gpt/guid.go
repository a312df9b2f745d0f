package gpt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// GUID is a GUID in the byte order of its canonical text (RFC 4122 / 9562
// "network order"). On disk GPT stores the first three fields little-endian;
// encoding and decoding convert, so String prints exactly what Linux shows as
// PARTUUID and blkid as PTUUID.
type GUID [16]byte

// Well-known partition type GUIDs. They are variables only because Go has no
// array constants; treat them as constants.
var (
	// TypeEFISystem is the EFI System Partition (FAT).
	TypeEFISystem = GUID{0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	// TypeMicrosoftBasicData is a plain FAT/NTFS data partition.
	TypeMicrosoftBasicData = GUID{0xeb, 0xd0, 0xa0, 0xa2, 0xb9, 0xe5, 0x44, 0x33, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7}
	// TypeLinuxFilesystem is generic Linux filesystem data.
	TypeLinuxFilesystem = GUID{0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	// TypeLinuxRootAMD64 is a Linux root partition for x86-64
	// (Discoverable Partitions Specification).
	TypeLinuxRootAMD64 = GUID{0x4f, 0x68, 0xbc, 0xe3, 0xe8, 0xcd, 0x4d, 0xb1, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09}
	// TypeLinuxRootARM64 is a Linux root partition for AArch64.
	TypeLinuxRootARM64 = GUID{0xb9, 0x21, 0xb0, 0x45, 0x1d, 0xf0, 0x41, 0xc3, 0xaf, 0x44, 0x4c, 0x6f, 0x28, 0x0d, 0x3f, 0xae}
)

// String returns the canonical lowercase form, e.g.
// "0fc63daf-8483-4772-8e79-3d69d8477de4".
func (g GUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], g[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], g[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], g[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], g[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], g[10:16])
	return string(b[:])
}

// IsZero reports whether g is the all-zero GUID, which marks an unused
// partition entry.
func (g GUID) IsZero() bool { return g == GUID{} }

// ParseGUID parses the canonical 36-character form, in either case.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("gpt: GUID %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	var digits [32]byte
	n := 0
	for i := 0; i < len(s); i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue
		}
		digits[n] = s[i]
		n++
	}
	if _, err := hex.Decode(g[:], digits[:]); err != nil {
		return GUID{}, fmt.Errorf("gpt: GUID %q: %w", s, err)
	}
	return g, nil
}

// GUIDFromName derives a GUID deterministically from a namespace and a name:
// the first 16 bytes of SHA-256(len(namespace) || namespace || name), with
// the version set to 8 (custom, RFC 9562) and the RFC variant bits. The
// length prefix keeps ("ab","c") and ("a","bc") apart. Builds use it so
// that the same appliance gets the same partition GUIDs every time.
func GUIDFromName(namespace, name string) GUID {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(namespace)))
	h.Write(n[:])
	h.Write([]byte(namespace))
	h.Write([]byte(name))
	var g GUID
	copy(g[:], h.Sum(nil))
	g[6] = g[6]&0x0f | 0x80 // version 8
	g[8] = g[8]&0x3f | 0x80 // variant 10xx
	return g
}

// encode writes g into b (16 bytes) in GPT's on-disk mixed-endian order.
func (g GUID) encode(b []byte) {
	b[0], b[1], b[2], b[3] = g[3], g[2], g[1], g[0]
	b[4], b[5] = g[5], g[4]
	b[6], b[7] = g[7], g[6]
	copy(b[8:16], g[8:16])
}

// decodeGUID reads a GUID stored in GPT's on-disk order.
func decodeGUID(b []byte) GUID {
	var g GUID
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:16], b[8:16])
	return g
}
