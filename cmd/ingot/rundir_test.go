package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingotdev/ingot/hypervisor/vm"
)

// TestPlantedRunDirGetsNoToken performs the attack on the predictable run
// directory: another local user creates ingot-UID under the shared
// temporary directory before the owner does and plants a vsock.sock in it
// that answers like the VM's hybrid vsock. The CLI must refuse the
// directory instead of sending the bearer token to the planted socket.
func TestPlantedRunDirGetsNoToken(t *testing.T) {
	base := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", base)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, ".ingot"), 0o700)
	const token = "secret-token-0123456789"
	if err := os.WriteFile(filepath.Join(dir, ".ingot", "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "hello-vm-amd64.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Learn where the socket would be, then hand the parent to the attacker.
	runDir, err := vm.DefaultRunDir(img)
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(runDir)

	attacks := []struct {
		name  string
		plant func(t *testing.T)
	}{
		{"world-writable", func(t *testing.T) { os.Chmod(parent, 0o777) }},
		{"owned by another user", func(t *testing.T) {
			if os.Getuid() != 0 {
				// Only root can give a directory away; an unprivileged
				// run checks the mode rule twice instead.
				os.Chmod(parent, 0o770)
				return
			}
			if err := os.Chown(parent, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}},
		{"a symlink to the attacker's directory", func(t *testing.T) {
			theirs := filepath.Join(t.TempDir(), "theirs")
			os.Rename(parent, theirs)
			if err := os.Symlink(theirs, parent); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			os.RemoveAll(parent)
			if err := os.MkdirAll(runDir, 0o700); err != nil {
				t.Fatal(err)
			}
			got := plantSocket(t, vm.VsockPath(runDir))
			a.plant(t)
			code, _, errOut := runCLI(t, "status", "-C", dir, "-timeout", "5s")
			if code == 0 || !strings.Contains(errOut, "run directory") {
				t.Errorf("ingot status with a planted run directory: exit %d, stderr %q; want a refusal naming the run directory", code, errOut)
			}
			if s := got(); strings.Contains(s, token) {
				t.Errorf("the planted socket received the token: %q", s)
			}
		})
	}
	// The owner's own directory still works as before.
	os.RemoveAll(parent)
	if d, err := vm.DefaultRunDir(img); err != nil || d != runDir {
		t.Errorf("DefaultRunDir on a fresh base = %s, %v; want %s", d, err, runDir)
	}
	if fi, err := os.Lstat(parent); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("run directory parent: %v, %v; want mode 0700", fi, err)
	}
}

// plantSocket listens on path like a hybrid vsock (CONNECT n → OK) and
// returns a function that reports everything the client sent.
func plantSocket(t *testing.T, path string) func() string {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var got strings.Builder
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				io.WriteString(c, "OK 1\n")
				b := make([]byte, 4096)
				n, _ := r.Read(b)
				mu.Lock()
				got.WriteString(line)
				got.Write(b[:n])
				mu.Unlock()
			}()
		}
	}()
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return got.String()
	}
}
