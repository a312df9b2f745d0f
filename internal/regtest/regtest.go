// Package regtest starts a real OCI registry for tests: Debian's
// docker-registry (distribution 2.8, installed by scripts/setup.sh) on a
// loopback port with its storage in a temporary directory, stopped when
// the test ends.
package regtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Binary is the registry's executable, as the Debian package installs it.
const Binary = "docker-registry"

// readyWait bounds how long the registry may take to answer /v2/; it
// only guards against a registry that never comes up.
const readyWait = 2 * time.Minute

// Start runs the registry over plain HTTP on a free loopback port and
// returns its host:port.
func Start(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Fatalf("%s not found (scripts/setup.sh installs the docker-registry package): %v", Binary, err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, strconv.Quote(filepath.Join(dir, "storage")), addr)
	confPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary, "serve", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", Binary, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("%s log:\n%s", Binary, b)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), readyWait)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("%s exited before it served: %v\n%s", Binary, waitErr, b)
		case <-ctx.Done():
			t.Fatalf("%s did not answer http://%s/v2/ within %s (last: %v)", Binary, addr, readyWait, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
