// Package debfetch downloads Debian packages that a build pins by their
// path in the archive, their size and their SHA-256 (the kernel of VM
// images, the UEFI boot loader), into a cache directory, and verifies them
// before anything uses them.
//
// A pin names the file's path under a Debian mirror's root, such as
// debian-security/pool/updates/main/l/linux-signed-amd64/linux-image-….deb,
// and optionally a snapshot.debian.org time stamp. The file is fetched
// from the mirror (http://deb.debian.org by default) and, when the
// mirror no longer has it (a superseded security update leaves the
// security archive within weeks), from snapshot.debian.org at the pinned
// time. HTTP is enough: the SHA-256 in the pin, not the transport, is what
// is trusted. A download goes to a temporary file, is checked for size and
// digest, and only then renamed into the cache; a mismatch caches nothing
// and names the URL, the expected and the actual digest.
package debfetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Default mirrors. Go's HTTP client honours $HTTP_PROXY.
const (
	DefaultMirror   = "http://deb.debian.org"
	DefaultSnapshot = "http://snapshot.debian.org/archive"
)

// maxPackageBytes bounds a pin's size, so a corrupt lock cannot make the
// fetcher fill a disk.
const maxPackageBytes = 1 << 30

// Pin identifies one .deb file exactly.
type Pin struct {
	// Path is the file's path under the mirror's root: the archive
	// ("debian", "debian-security") and its pool path.
	Path string
	// Size is the file's length in bytes.
	Size int64
	// SHA256 is the file's digest, 64 lower-case hex digits.
	SHA256 string
	// Snapshot is a snapshot.debian.org time stamp (20261204T000000Z) at
	// which the archive held the file; empty for no fallback.
	Snapshot string
}

// ParsePin reads a pin as String writes it:
// "PATH SIZE SHA256 [SNAPSHOT]".
func ParsePin(s string) (Pin, error) {
	f := strings.Fields(s)
	if len(f) != 3 && len(f) != 4 {
		return Pin{}, fmt.Errorf("debfetch: pin %q: want PATH SIZE SHA256 [SNAPSHOT]", s)
	}
	p := Pin{Path: f[0], SHA256: f[2]}
	if len(f) == 4 {
		p.Snapshot = f[3]
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Pin{}, fmt.Errorf("debfetch: pin %q: size: %w", s, err)
	}
	p.Size = n
	return p, p.Check()
}

// Check reports the first thing wrong with p.
func (p Pin) Check() error {
	clean := path.Clean(p.Path)
	switch {
	case p.Path == "" || clean != p.Path || strings.HasPrefix(p.Path, "/") || strings.HasPrefix(clean, ".."):
		return fmt.Errorf("debfetch: pin path %q: want a clean relative path under the mirror", p.Path)
	case !strings.HasSuffix(p.Path, ".deb"):
		return fmt.Errorf("debfetch: pin path %q: not a .deb", p.Path)
	case p.Size <= 0 || p.Size > maxPackageBytes:
		return fmt.Errorf("debfetch: pin %s: size %d out of range 1..%d", p.Path, p.Size, int64(maxPackageBytes))
	case len(p.SHA256) != 64 || strings.ToLower(p.SHA256) != p.SHA256 || !isHex(p.SHA256):
		return fmt.Errorf("debfetch: pin %s: sha256 %q: want 64 lower-case hex digits", p.Path, p.SHA256)
	case strings.ContainsAny(p.Snapshot, "/ ") || (p.Snapshot != "" && !strings.HasSuffix(p.Snapshot, "Z")):
		return fmt.Errorf("debfetch: pin %s: snapshot %q: want a time stamp like 20261204T000000Z", p.Path, p.Snapshot)
	}
	return nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// String is the pin as ParsePin reads it.
func (p Pin) String() string {
	s := fmt.Sprintf("%s %d %s", p.Path, p.Size, p.SHA256)
	if p.Snapshot != "" {
		s += " " + p.Snapshot
	}
	return s
}

// FileName is the .deb's own name (package_version_arch.deb).
func (p Pin) FileName() string { return path.Base(p.Path) }

// Fetcher downloads pinned packages into Dir.
type Fetcher struct {
	// Dir is the cache directory; files are kept under their own names.
	Dir string
	// Mirror and Snapshot are the URLs of the mirror's root and of
	// snapshot.debian.org's archive; empty means the defaults. An empty
	// Snapshot with NoSnapshot set tries only the mirror.
	Mirror, Snapshot string
	NoSnapshot       bool
	// Client does the requests; nil is a client with Go's default
	// transport (which honours $HTTP_PROXY) and a one-minute bound on the
	// wait for response headers.
	Client *http.Client
	// Progress, when set, is told of each download.
	Progress io.Writer
}

// URLs returns where p is fetched from, in order.
func (f *Fetcher) URLs(p Pin) []string {
	mirror := strings.TrimSuffix(f.Mirror, "/")
	if mirror == "" {
		mirror = DefaultMirror
	}
	urls := []string{mirror + "/" + p.Path}
	if p.Snapshot != "" && !f.NoSnapshot {
		snap := strings.TrimSuffix(f.Snapshot, "/")
		if snap == "" {
			snap = DefaultSnapshot
		}
		archive, pool, _ := strings.Cut(p.Path, "/")
		urls = append(urls, snap+"/"+archive+"/"+p.Snapshot+"/"+pool)
	}
	return urls
}

// ErrDigest is wrapped when a file's SHA-256 is not the pin's.
var ErrDigest = errors.New("sha256 mismatch")

// Fetch returns the path of p's file in the cache, downloading it when it
// is missing. A cached file is verified (size and SHA-256) before it is
// returned; one that fails is removed and fetched again.
func (f *Fetcher) Fetch(ctx context.Context, p Pin) (string, error) {
	if err := p.Check(); err != nil {
		return "", err
	}
	dst := filepath.Join(f.Dir, p.FileName())
	if err := verifyFile(dst, p); err == nil {
		return dst, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		os.Remove(dst) // corrupt or stale: fetch again
	}
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return "", fmt.Errorf("debfetch: %w", err)
	}
	var errs []error
	for _, u := range f.URLs(p) {
		err := f.download(ctx, u, p, dst)
		if err == nil {
			return dst, nil
		}
		if errors.Is(err, ErrDigest) || ctx.Err() != nil {
			// The pin and the file disagree: another mirror would not
			// make the file trustworthy.
			return "", fmt.Errorf("debfetch: %w", err)
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("debfetch: %w", errors.Join(errs...))
}

func (f *Fetcher) download(ctx context.Context, url string, p Pin, dst string) (err error) {
	client := f.Client
	if client == nil {
		client = defaultClient()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if f.Progress != nil {
		fmt.Fprintf(f.Progress, "fetching %s (%d bytes)\n", url, p.Size)
	}
	tmp, err := os.CreateTemp(f.Dir, "."+p.FileName()+".*")
	if err != nil {
		return fmt.Errorf("%w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// One byte more than the pin's size shows a file that is too long.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(resp.Body, p.Size+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if n != p.Size {
		return fmt.Errorf("GET %s: %w: %d bytes, the pin says %d", url, ErrDigest, n, p.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("GET %s: %w: expected %s, got %s; nothing was cached", url, ErrDigest, p.SHA256, got)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}

// responseHeaderTimeout bounds the wait for a mirror's answer; the body
// may take as long as it needs (ctx cancels it).
const responseHeaderTimeout = time.Minute

// defaultClient is an HTTP client with the default transport's settings
// ($HTTP_PROXY included) and a bound on a silent server.
func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = responseHeaderTimeout
	return &http.Client{Transport: t}
}

// verifyFile checks that the file at name is p's.
func verifyFile(name string, p Pin) error {
	fh, err := os.Open(name)
	if err != nil {
		return err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(fh, p.Size+1))
	if err != nil {
		return fmt.Errorf("debfetch: %s: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != p.Size || got != p.SHA256 {
		return fmt.Errorf("debfetch: %s: %w: %d bytes, sha256 %s; the pin says %d bytes, %s", name, ErrDigest, n, got, p.Size, p.SHA256)
	}
	return nil
}
