package mgmt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ingotdev/ingot/mgmt/transport"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// Client talks to the agent of one appliance. It is safe for concurrent
// use; connections are kept alive and reused.
type Client struct {
	target  string
	baseURL string
	token   string
	http    *http.Client
	// dial opens one connection to the agent, authenticated as for
	// requests (Dial).
	dial func(ctx context.Context) (net.Conn, error)
}

// ClientOption configures a Client.
type ClientOption func(*clientOptions)

type clientOptions struct {
	certSHA256 string
	dial       func(ctx context.Context) (net.Conn, error)
}

// WithCertSHA256 pins the agent's TLS certificate for https:// targets: the
// lowercase hex SHA-256 of its DER encoding (certpin.OfDER). The agent's
// certificate is self-signed, so the pin is the only thing that
// authenticates it, and an https:// target without one is refused.
func WithCertSHA256(hexDigest string) ClientOption {
	return func(o *clientOptions) { o.certSHA256 = strings.ToLower(strings.TrimSpace(hexDigest)) }
}

// WithDialer replaces the transport: every connection comes from dial
// instead of the target. Tests and embedders with their own byte streams
// use it; the target then only names the agent in errors.
func WithDialer(dial func(ctx context.Context) (net.Conn, error)) ClientOption {
	return func(o *clientOptions) { o.dial = dial }
}

// expectContinueWait is how long an update waits for the agent's
// "100 Continue" before it sends the body anyway: long enough that an agent
// that rejects the headers (token, size, arch) answers first and the body is
// never sent, short enough not to be felt.
const expectContinueWait = 3 * time.Second

// errorBodyBytes bounds how much of an error reply is read.
const errorBodyBytes = 64 << 10

// NewClient returns a client for the agent at target, authenticating with
// token (surrounding whitespace is ignored, as in the token file).
//
// target is vsock://CID:PORT or unix:///path.sock?port=N (hybrid vsock),
// both TLS with the key the agent's image derives from the token
// (certpin.TokenKey), tcp://HOST:PORT (plain TCP: the token crosses the
// network in the clear, for loopback and tests) or https://HOST:PORT (TLS
// with WithCertSHA256).
func NewClient(target, token string, opts ...ClientOption) (*Client, error) {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errors.New("mgmt: empty token")
	}
	if strings.ContainsAny(token, "\r\n") {
		return nil, errors.New("mgmt: token holds a line break")
	}
	c := &Client{target: target, token: token, baseURL: "http://ingot"}
	tr := &http.Transport{
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: expectContinueWait,
		DisableCompression:    true, // bodies are squashfs or small JSON
		// Proxy stays nil: HTTP_PROXY must never see the token.
	}
	switch {
	case o.dial != nil:
		c.dial = o.dial
	case strings.HasPrefix(target, "https://"):
		u, err := url.Parse(target)
		if err != nil {
			return nil, fmt.Errorf("mgmt: target %q: %w", target, err)
		}
		if u.Port() == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("mgmt: target %q: want https://HOST:PORT", target)
		}
		if o.certSHA256 == "" {
			return nil, fmt.Errorf("mgmt: target %q: https needs the agent's certificate fingerprint (WithCertSHA256)", target)
		}
		pin, err := hex.DecodeString(o.certSHA256)
		if err != nil || len(pin) != 32 {
			return nil, fmt.Errorf("mgmt: certificate fingerprint %q: want 64 hex digits", o.certSHA256)
		}
		tr.TLSClientConfig = pinnedTLS(pin)
		c.baseURL = "https://" + u.Host
		c.dial = func(ctx context.Context) (net.Conn, error) {
			d := tls.Dialer{Config: pinnedTLS(pin)}
			return d.DialContext(ctx, "tcp", u.Host)
		}
	default:
		t, err := transport.ParseTarget(target)
		if err != nil {
			return nil, fmt.Errorf("mgmt: %w", err)
		}
		if t.Scheme == transport.SchemeTCP {
			c.dial = func(ctx context.Context) (net.Conn, error) { return transport.DialTarget(ctx, t) }
			break
		}
		// vsock, plain or hybrid: any process in the guest could hold the
		// port, so the agent proves the token-derived key first.
		cfg, err := tokenKeyTLS(token)
		if err != nil {
			return nil, err
		}
		c.dial = func(ctx context.Context) (net.Conn, error) { return dialTokenTLS(ctx, t, cfg) }
	}
	if tr.TLSClientConfig == nil {
		// https leaves the (pinned) TLS to the transport instead.
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) }
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// pinnedTLS accepts exactly the certificate whose SHA-256 is pin: the agent's
// certificate is self-signed, so chains and names say nothing.
func pinnedTLS(pin []byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection's pin check
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("mgmt: agent sent no certificate")
			}
			got := certpin.OfDER(cs.PeerCertificates[0].Raw)
			if got != hex.EncodeToString(pin) {
				return fmt.Errorf("mgmt: agent certificate sha256 %s does not match the pinned %x", got, pin)
			}
			return nil
		},
	}
}

// errAgentKey is a vsock agent whose key is not the one derived from the
// client's token.
var errAgentKey = errors.New("the agent did not prove the key derived from this token (a wrong token, or another process holds the agent's port)")

// tokenKeyTLS accepts exactly the agent whose certificate holds the public
// half of certpin.TokenKey(token): the image holds the private half, and
// nothing else in the guest can read it.
func tokenKeyTLS(token string) (*tls.Config, error) {
	key, err := certpin.TokenKey(token)
	if err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	pub := key.Public().(ed25519.PublicKey)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection's key check
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errAgentKey
			}
			got, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
			if !ok || !got.Equal(pub) {
				return errAgentKey
			}
			return nil
		},
	}, nil
}

// DialAgent connects to the agent at a vsock target (vsock:// or unix://
// hybrid vsock) and completes TLS with the key derived from token, so
// nothing is sent before the agent proved it holds that key. The client
// uses it for every connection; tests and tools that speak raw HTTP to
// the agent use it too.
func DialAgent(ctx context.Context, target, token string) (net.Conn, error) {
	t, err := transport.ParseTarget(target)
	if err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	if t.Scheme == transport.SchemeTCP {
		return nil, fmt.Errorf("mgmt: target %q: DialAgent is for vsock targets", target)
	}
	cfg, err := tokenKeyTLS(token)
	if err != nil {
		return nil, err
	}
	return dialTokenTLS(ctx, t, cfg)
}

func dialTokenTLS(ctx context.Context, t transport.Target, cfg *tls.Config) (net.Conn, error) {
	c, err := transport.DialTarget(ctx, t)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		if errors.Is(err, errAgentKey) {
			// Both ends hold a token, and they differ: to the user this
			// is the agent's 401.
			return nil, fmt.Errorf("mgmt: %v: %w: %w", t, ErrUnauthorized, err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			// The agent closed the connection before its answer: it
			// refuses connections beyond its limits at accept.
			return nil, fmt.Errorf("mgmt: %v: the agent closed the connection during the TLS handshake (it refuses connections beyond its limit of unauthenticated ones per peer; an agent built before vsock TLS does too): %w", t, err)
		}
		return nil, fmt.Errorf("mgmt: %v: no TLS with the token-derived key (agents built before it spoke plain HTTP on vsock): %w", t, err)
	}
	return tc, nil
}

// Dial opens a connection to the agent, authenticated as the client's
// requests are (the vsock key derived from the token, or the pinned
// certificate), over which the caller speaks HTTP itself: `ingot ui`
// forwards a browser's connections this way. Nothing is sent on it yet,
// the token included.
func (c *Client) Dial(ctx context.Context) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("mgmt: %s: %w", c.target, err)
	}
	return conn, nil
}

// Target returns the target the client was made for.
func (c *Client) Target() string { return c.target }

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// newRequest builds an authenticated request.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("mgmt: %s %s: %w", method, path, err)
	}
	req.Header.Set(HeaderAuthorization, BearerPrefix+c.token)
	return req, nil
}

// send runs req and returns the response if it is 2xx; otherwise the body
// is read into an *APIError.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mgmt: %s %s %s: %w", c.target, req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readAPIError(resp)
}

func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyBytes))
	e := &APIError{StatusCode: resp.StatusCode}
	var body ErrorBody
	switch {
	case json.Unmarshal(b, &body) == nil && body.Error != "":
		e.Message = body.Error
	case len(bytes.TrimSpace(b)) > 0:
		e.Message = string(bytes.TrimSpace(b))
	default:
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// call runs a request without a streamed body and decodes a JSON reply
// into out (when out is not nil).
func (c *Client) call(ctx context.Context, method, path string, out any) error {
	req, err := c.newRequest(ctx, method, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeReply(resp, method, path, out)
}

func decodeReply(resp *http.Response, method, path string, out any) error {
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyBytes))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("mgmt: %s %s: reply: %w", method, path, err)
	}
	return nil
}

// SBOM returns the appliance image's software bill of materials (SPDX 2.3
// JSON) as it was built into the image.
func (c *Client) SBOM(ctx context.Context) ([]byte, error) {
	req, err := c.newRequest(ctx, http.MethodGet, PathSBOM, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSBOMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("mgmt: GET %s: %w", PathSBOM, err)
	}
	if len(b) > maxSBOMBytes {
		return nil, fmt.Errorf("mgmt: GET %s: more than %d bytes", PathSBOM, maxSBOMBytes)
	}
	return b, nil
}

// maxSBOMBytes bounds what the client reads of an SBOM.
const maxSBOMBytes = 64 << 20

// Status returns the appliance's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.call(ctx, http.MethodGet, PathStatus, &s)
	return s, err
}

// Service tells a service to start, stop or restart and returns its status
// afterwards.
func (c *Client) Service(ctx context.Context, name string, a Action) (ServiceStatus, error) {
	var s ServiceStatus
	if !a.Valid() {
		return s, fmt.Errorf("mgmt: unknown service action %q", a)
	}
	if name == "" || strings.ContainsAny(name, "/?#%") {
		return s, fmt.Errorf("mgmt: service name %q is not valid", name)
	}
	err := c.call(ctx, http.MethodPost, ServicePath(name, a), &s)
	return s, err
}

// Start starts a stopped service.
func (c *Client) Start(ctx context.Context, name string) (ServiceStatus, error) {
	return c.Service(ctx, name, ActionStart)
}

// Stop stops a service and keeps it stopped until Start or Restart.
func (c *Client) Stop(ctx context.Context, name string) (ServiceStatus, error) {
	return c.Service(ctx, name, ActionStop)
}

// Restart stops a service if it runs and starts it again.
func (c *Client) Restart(ctx context.Context, name string) (ServiceStatus, error) {
	return c.Service(ctx, name, ActionRestart)
}

// Reboot asks the appliance to stop its services and reboot. It returns
// once the agent accepted; the connection drops shortly after.
func (c *Client) Reboot(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, PathReboot, &Accepted{})
}

// Poweroff asks the appliance to stop its services and power off.
func (c *Client) Poweroff(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, PathPoweroff, &Accepted{})
}

// Commit makes the slot the last UpdateRoot wrote the trial slot: the next
// boot runs it once, and it becomes active only when it proves healthy.
func (c *Client) Commit(ctx context.Context) (SlotState, error) {
	var s SlotState
	err := c.call(ctx, http.MethodPost, PathCommit, &s)
	return s, err
}

// Rollback cancels a pending trial or, without one, makes the other slot
// the trial slot (see the agent's documentation). The switch happens at
// the next boot; call Reboot to get there.
func (c *Client) Rollback(ctx context.Context) (SlotState, error) {
	var s SlotState
	err := c.call(ctx, http.MethodPost, PathRollback, &s)
	return s, err
}

// LogStream is a stream of log lines from Logs.
type LogStream struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// Next returns the next line; io.EOF when a stream without follow ended.
// A followed stream ends when the context given to Logs ends.
func (s *LogStream) Next() (LogLine, error) {
	var l LogLine
	if err := s.dec.Decode(&l); err != nil {
		if errors.Is(err, io.EOF) {
			return l, io.EOF
		}
		return l, fmt.Errorf("mgmt: log stream: %w", err)
	}
	return l, nil
}

// Close ends the stream.
func (s *LogStream) Close() error { return s.body.Close() }

// Logs opens the log of service ("init" is ingot-init's own): the last n
// lines (n < 0: all the agent holds), then, with follow, every new line
// until ctx ends or the stream is closed.
func (c *Client) Logs(ctx context.Context, service string, n int, follow bool) (*LogStream, error) {
	q := url.Values{}
	if follow {
		q.Set(ParamFollow, "1")
	}
	return c.openLogs(ctx, service, n, q)
}

// openLogs asks for the last n lines of service's log with the further
// parameters q.
func (c *Client) openLogs(ctx context.Context, service string, n int, q url.Values) (*LogStream, error) {
	q.Set(ParamService, service)
	if n >= 0 {
		q.Set(ParamLines, strconv.Itoa(n))
	}
	req, err := c.newRequest(ctx, http.MethodGet, PathLogs+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return &LogStream{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

// DiskLogs opens the log of service as the appliance keeps it on its perm
// partition: the last n lines (n < 0: all) across boots, including the
// boots before this one, such as a failed trial's. It ends after them.
func (c *Client) DiskLogs(ctx context.Context, service string, n int) (*LogStream, error) {
	return c.openLogs(ctx, service, n, url.Values{ParamSource: {SourceDisk}})
}

// progressReader reports the bytes read so far after every read.
type progressReader struct {
	r        io.Reader
	n        int64
	progress func(n int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if n > 0 && p.progress != nil {
		p.progress(p.n)
	}
	return n, err
}

// validSHA256 reports whether s is 64 lowercase hex digits.
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// upload PUTs size bytes from r to path and checks that the agent echoes
// the hash and length it was sent.
func (c *Client) upload(ctx context.Context, path string, r io.Reader, size int64, sha256Hex string, hdr http.Header, progress func(n int64)) (UpdateResult, error) {
	var res UpdateResult
	sha256Hex = strings.ToLower(sha256Hex)
	if !validSHA256(sha256Hex) {
		return res, fmt.Errorf("mgmt: PUT %s: sha256 %q: want 64 hex digits", path, sha256Hex)
	}
	if size <= 0 {
		return res, fmt.Errorf("mgmt: PUT %s: size %d: want more than 0 bytes", path, size)
	}
	req, err := c.newRequest(ctx, http.MethodPut, path, &progressReader{r: r, progress: progress})
	if err != nil {
		return res, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue")
	req.Header.Set(HeaderSHA256, sha256Hex)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.send(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if err := decodeReply(resp, http.MethodPut, path, &res); err != nil {
		return res, err
	}
	if res.SHA256 != sha256Hex || res.Bytes != size {
		return res, fmt.Errorf("mgmt: PUT %s: agent wrote %d bytes with sha256 %s, sent %d bytes with sha256 %s", path, res.Bytes, res.SHA256, size, sha256Hex)
	}
	return res, nil
}

// UpdateRoot streams a root squashfs of size bytes with the given SHA-256
// (lowercase hex), described by root, into the appliance's inactive slot.
// progress, when not nil, is called with the bytes sent so far. Nothing
// boots it until Commit; the agent rejects a wrong hash, length, magic or
// architecture, and a downgrade (CheckRelease), and leaves the boot state
// as it was.
func (c *Client) UpdateRoot(ctx context.Context, r io.Reader, size int64, sha256Hex string, root Root, progress func(n int64)) (UpdateResult, error) {
	if root.Arch == "" {
		return UpdateResult{}, errors.New("mgmt: PUT " + PathUpdateRoot + ": no architecture given")
	}
	return c.upload(ctx, PathUpdateRoot, r, size, sha256Hex, root.header(), progress)
}

// BootFiles asks which kernel, initramfs and command line slot ("a", "b",
// or "" for both) boots with, as hashes.
func (c *Client) BootFiles(ctx context.Context, slot string) (BootFiles, error) {
	var out BootFiles
	path := PathBootFiles
	if slot != "" {
		path += "?" + url.Values{ParamSlot: {slot}}.Encode()
	}
	err := c.call(ctx, http.MethodGet, path, &out)
	return out, err
}

// BootFile is one file of the boot partition for UpdateBoot.
type BootFile struct {
	// Name is the file's name on the boot partition, e.g. "vmlinuz".
	Name   string
	Body   io.Reader
	Size   int64
	SHA256 string
}

// validBootFileName reports whether name can travel in a PUT's path: a
// slash-separated relative path ("overlays/x.dtbo") without empty, "." or
// ".." elements or characters a URL path would treat specially. The agent
// decides which names it takes.
func validBootFileName(name string) bool {
	if name == "" || strings.ContainsAny(name, "\\?#%") {
		return false
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

// UpdateBoot stages files for the boot partition; the agent keeps them
// under temporary names until Commit. progress, when not nil, is called
// with the file's name and the bytes of it sent so far.
func (c *Client) UpdateBoot(ctx context.Context, files []BootFile, progress func(name string, n int64)) ([]UpdateResult, error) {
	var out []UpdateResult
	for _, f := range files {
		if !validBootFileName(f.Name) {
			return out, fmt.Errorf("mgmt: boot file name %q is not valid", f.Name)
		}
		var p func(int64)
		if progress != nil {
			p = func(n int64) { progress(f.Name, n) }
		}
		res, err := c.upload(ctx, PathUpdateBoot+f.Name, f.Body, f.Size, f.SHA256, nil, p)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}
