package assemble

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// vsockProbe is a program run inside the box container: it tries what
// issue 12's attack 1 did, opening an AF_VSOCK socket to bind the
// management agent's port, and prints "denied" when the container's
// seccomp filter refuses the socket with EPERM.
const vsockProbe = `package main

import (
	"fmt"
	"syscall"
)

const afVsock = 40

func main() {
	fd, err := syscall.Socket(afVsock, syscall.SOCK_STREAM, 0)
	switch {
	case err == syscall.EPERM:
		fmt.Println("denied")
	case err != nil:
		fmt.Println("error:", err)
	default:
		syscall.Close(fd)
		fmt.Println("opened")
	}
}
`

// buildVsockProbe compiles vsockProbe as a static binary for arch.
func buildVsockProbe(t *testing.T, arch string) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"go.mod": "module vsockprobe\n\ngo 1.22\n", "main.go": vsockProbe} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "vsockprobe")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the vsock probe for %s: %v\n%s", arch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
