package agent

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FilesystemUsage returns the bytes used and the total size of the
// filesystem mounted at dir, for mgmt.PermStatus.
func FilesystemUsage(dir string) (usedBytes, totalBytes int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("agent: statfs %s: %w", dir, err)
	}
	bsize := int64(st.Bsize)
	total := int64(st.Blocks) * bsize
	return total - int64(st.Bfree)*bsize, total, nil
}
