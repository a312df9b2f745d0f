package gpt

import (
	"strings"
	"testing"
)

func TestGUIDString(t *testing.T) {
	for _, tc := range []struct {
		g    GUID
		want string
	}{
		{TypeLinuxFilesystem, "0fc63daf-8483-4772-8e79-3d69d8477de4"},
		{TypeEFISystem, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"},
		{TypeMicrosoftBasicData, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"},
		{TypeLinuxRootAMD64, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"},
		{TypeLinuxRootARM64, "b921b045-1df0-41c3-af44-4c6f280d3fae"},
		{GUID{}, "00000000-0000-0000-0000-000000000000"},
	} {
		if got := tc.g.String(); got != tc.want {
			t.Errorf("String(% x) = %s, want %s", tc.g[:], got, tc.want)
		}
		back, err := ParseGUID(strings.ToUpper(tc.want))
		if err != nil || back != tc.g {
			t.Errorf("ParseGUID(%s) = %s, %v, want %s", strings.ToUpper(tc.want), back, err, tc.g)
		}
	}
}

func TestParseGUIDErrors(t *testing.T) {
	for _, in := range []string{
		"", "0fc63daf84834772-8e79-3d69d8477de4", "0fc63daf-8483-4772-8e79-3d69d8477de", "0fc63daf-8483-4772-8e79-3d69d8477de4a",
		"0fc63daf-8483-4772-8e79_3d69d8477de4", "0fc63dag-8483-4772-8e79-3d69d8477de4", "{fc63daf-8483-4772-8e79-3d69d8477de4",
	} {
		if g, err := ParseGUID(in); err == nil {
			t.Errorf("ParseGUID(%q) = %s, want error", in, g)
		}
	}
}

func TestOnDiskOrder(t *testing.T) {
	var b [16]byte
	TypeEFISystem.encode(b[:])
	// UEFI spec: EFI_SYSTEM_PARTITION_GUID bytes on disk.
	want := [16]byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	if b != want {
		t.Errorf("encode(EFI system) = % x, want % x", b, want)
	}
	if got := decodeGUID(b[:]); got != TypeEFISystem {
		t.Errorf("decodeGUID(% x) = %s, want %s", b, got, TypeEFISystem)
	}
}

func TestGUIDFromName(t *testing.T) {
	a := GUIDFromName("ingot", "hello/root-a")
	if again := GUIDFromName("ingot", "hello/root-a"); again != a {
		t.Errorf("GUIDFromName not deterministic: %s then %s", a, again)
	}
	seen := map[GUID]string{}
	for _, in := range [][2]string{{"ingot", "hello/root-a"}, {"ingot", "hello/root-b"}, {"ingotx", "hello/root-a"}, {"ab", "c"}, {"a", "bc"}} {
		g := GUIDFromName(in[0], in[1])
		if prev, ok := seen[g]; ok {
			t.Errorf("GUIDFromName(%q) = %s, same as for %s", in, g, prev)
		}
		seen[g] = in[0] + "|" + in[1]
		if s := g.String(); s[14] != '8' || !strings.ContainsRune("89ab", rune(s[19])) {
			t.Errorf("GUIDFromName(%q) = %s, want version 8 and RFC variant", in, s)
		}
	}
}
