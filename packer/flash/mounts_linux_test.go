package flash

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestReadMountInfo(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	// The btrfs line's source is a real block device node of this
	// machine's devtmpfs: /dev/loop0 always exists where loop is built in.
	info := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"30 22 8:17 / /media/my\\040card rw shared:2 - vfat sdb1 rw\n" +
		"31 22 8:17 /sub /mnt/again rw shared:2 - vfat sdb1 rw\n" +
		"40 22 0:33 / /data rw shared:3 - btrfs /dev/loop0 rw\n" +
		"short line\n"
	if err := os.WriteFile(p, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := readMountInfo(p)
	if err != nil {
		t.Fatal(err)
	}
	got := mountedDevices(entries)
	want := map[string]string{"254:0": "/", "8:17": "/media/my card", "0:33": "/data", "7:0": "/data"}
	if _, err := os.Stat("/dev/vda"); err == nil {
		want[devNumOf(t, "/dev/vda")] = "/"
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mountedDevices(readMountInfo(%q)) mismatch (-want +got):\n%s", info, diff)
	}
}

func devNumOf(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return devNum(st.Rdev)
}

func TestUnescapeMount(t *testing.T) {
	tests := []struct{ in, want string }{
		{`/plain`, "/plain"},
		{`/a\040b`, "/a b"},
		{`/tab\011x\134y`, "/tab\tx\\y"},
		{`/trailing\04`, `/trailing\04`},
		{`/bad\09x`, `/bad\09x`},
	}
	for _, tc := range tests {
		if got := unescapeMount(tc.in); got != tc.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestProgressString(t *testing.T) {
	tests := []struct {
		in   Progress
		want string
	}{
		{Progress{Phase: PhaseWrite, Done: 96 << 20, Total: 384 << 20, Elapsed: 4 * time.Second}, "write 96.0 MiB of 384.0 MiB (25%), 24.0 MiB/s"},
		{Progress{Phase: PhaseVerify, Done: 0, Total: 1 << 30}, "verify 0 B of 1.0 GiB (0%)"},
	}
	for _, tc := range tests {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}
