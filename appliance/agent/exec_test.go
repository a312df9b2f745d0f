package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ingotdev/ingot/appliance/agent"
	"github.com/ingotdev/ingot/mgmt"
)

// fakeSession runs in memory: it upper-cases its input onto stdout, says
// "err" on stderr, and exits with the status sent as "exit N" or with
// 128+N when it gets signal N; it records resizes and signals.
type fakeSession struct {
	inR, outR, errR *io.PipeReader
	inW, outW, errW *io.PipeWriter
	exit            chan int
	mu              sync.Mutex
	resizes         []string
	signals         []syscall.Signal
	closed          chan struct{}
	closeOnce       sync.Once
}

func newFakeSession() *fakeSession {
	s := &fakeSession{exit: make(chan int, 1), closed: make(chan struct{})}
	s.inR, s.inW = io.Pipe()
	s.outR, s.outW = io.Pipe()
	s.errR, s.errW = io.Pipe()
	go func() {
		sc := bufio.NewScanner(s.inR)
		for sc.Scan() {
			line := sc.Text()
			var code int
			if _, err := fmt.Sscanf(line, "exit %d", &code); err == nil {
				s.finish(code)
				return
			}
			fmt.Fprintln(s.outW, strings.ToUpper(line))
			fmt.Fprintln(s.errW, "err")
		}
		// stdin closed: exit 0.
		s.finish(0)
	}()
	return s
}

func (s *fakeSession) finish(code int) {
	s.outW.Close()
	s.errW.Close()
	select {
	case s.exit <- code:
	default:
	}
}

func (s *fakeSession) Stdin() io.Writer   { return s.inW }
func (s *fakeSession) CloseStdin() error  { return s.inW.Close() }
func (s *fakeSession) Stdout() io.Reader  { return s.outR }
func (s *fakeSession) Stderr() io.Reader  { return s.errR }
func (s *fakeSession) Wait() (int, error) { return <-s.exit, nil }
func (s *fakeSession) Resize(r, c uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resizes = append(s.resizes, fmt.Sprintf("%dx%d", r, c))
	return nil
}

func (s *fakeSession) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	s.signals = append(s.signals, sig)
	s.mu.Unlock()
	s.finish(128 + int(sig))
	return nil
}

func (s *fakeSession) Close() error {
	s.closeOnce.Do(func() { close(s.closed); s.inR.Close(); s.finish(137) })
	return nil
}

type fakeExecer struct {
	mu       sync.Mutex
	sessions []*fakeSession
	reqs     []mgmt.ExecRequest
}

func (f *fakeExecer) Exec(_ context.Context, req mgmt.ExecRequest) (agent.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Shell {
		return nil, fmt.Errorf("no debug container: %w", mgmt.ErrConflict)
	}
	if req.Service != "box" {
		return nil, fmt.Errorf("no service %q: %w", req.Service, mgmt.ErrNotFound)
	}
	s := newFakeSession()
	f.sessions = append(f.sessions, s)
	f.reqs = append(f.reqs, req)
	return s, nil
}

func (f *fakeExecer) HasShell() bool { return false }

func (f *fakeExecer) session(i int) *fakeSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[i]
}

type execEnv struct {
	addr   string
	exec   *fakeExecer
	mu     sync.Mutex
	logged bytes.Buffer
}

func (e *execEnv) log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logged.String()
}

func newExecEnv(t *testing.T) *execEnv {
	t.Helper()
	e := &execEnv{exec: &fakeExecer{}}
	a, err := agent.New(agent.Deps{Info: &fakeInfo{}, Exec: e.exec}, hashHex([]byte(token)),
		agent.WithLogf(func(format string, args ...any) {
			e.mu.Lock()
			defer e.mu.Unlock()
			fmt.Fprintf(&e.logged, format+"\n", args...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-served
	})
	return e
}

func (e *execEnv) client(t *testing.T, tok string) *mgmt.Client {
	c, err := mgmt.NewClient("tcp://"+e.addr, tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestExecSession runs a session end to end over the upgraded connection:
// stdin in, stdout and stderr apart, resizes and the exit status, and
// init's log naming the peer, the service, the command and the status.
func TestExecSession(t *testing.T) {
	e := newExecEnv(t)
	c := e.client(t, token)
	sess, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"sh", "-c", "x"}, TTY: true, Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Resize(50, 132); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, err := sess.Run(strings.NewReader("hello\nworld\nexit 3\n"), &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	if out.String() != "HELLO\nWORLD\n" || errOut.String() != "err\nerr\n" {
		t.Errorf("stdout %q, stderr %q; want the upper-cased lines and two err lines", out.String(), errOut.String())
	}
	fs := e.exec.session(0)
	fs.mu.Lock()
	if len(fs.resizes) != 1 || fs.resizes[0] != "50x132" {
		t.Errorf("resizes %v, want [50x132]", fs.resizes)
	}
	fs.mu.Unlock()
	if r := e.exec.reqs[0]; r.Rows != 24 || r.Cols != 80 || !r.TTY || strings.Join(r.Argv, " ") != "sh -c x" {
		t.Errorf("request reached the execer as %+v", r)
	}
	// The end is logged after the exit frame went out.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.log(), "exit status 3") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	log := e.log()
	for _, want := range []string{"session 1 from 127.0.0.1:", `exec in box ["sh" "-c" "x"] (tty true) started`, "ended after", "exit status 3"} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q:\n%s", want, log)
		}
	}
}

// TestExecSignal: a signal frame reaches the session, which ends with
// 128+N.
func TestExecSignal(t *testing.T) {
	e := newExecEnv(t)
	c := e.client(t, token)
	sess, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	pr, _ := io.Pipe() // stdin that never ends
	code, err := sess.Run(pr, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if code != 130 {
		t.Errorf("exit status %d after SIGINT, want 130", code)
	}
}

// TestExecRefusals: no token, an unknown service, a shell without a debug
// container, a request without the upgrade, and malformed requests are
// answered with an error and start nothing.
func TestExecRefusals(t *testing.T) {
	e := newExecEnv(t)
	_, err := e.client(t, "wrong-token-wrong-token-wrong-token").Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"sh"}})
	if !errors.Is(err, mgmt.ErrUnauthorized) {
		t.Errorf("wrong token: %v, want ErrUnauthorized", err)
	}
	c := e.client(t, token)
	if _, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "nope", Argv: []string{"sh"}}); !errors.Is(err, mgmt.ErrNotFound) {
		t.Errorf("unknown service: %v, want ErrNotFound", err)
	}
	if _, err := c.Exec(t.Context(), mgmt.ExecRequest{Shell: true}); !errors.Is(err, mgmt.ErrConflict) || !strings.Contains(err.Error(), "no debug container") {
		t.Errorf("shell without a debug container: %v, want ErrConflict saying so", err)
	}
	post := func(body string, upgrade bool) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.addr+mgmt.PathExec, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if upgrade {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", mgmt.ExecUpgrade)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ok, _ := json.Marshal(mgmt.ExecRequest{Service: "box", Argv: []string{"sh"}})
	for _, tc := range []struct {
		name    string
		body    string
		upgrade bool
		want    int
	}{
		{"no upgrade", string(ok), false, 400},
		{"not JSON", "{", true, 400},
		{"unknown field", `{"service":"box","argv":["sh"],"user":"root"}`, true, 400},
		{"no command", `{"service":"box"}`, true, 400},
		{"too large", `{"service":"box","argv":["` + strings.Repeat("a", mgmt.MaxExecRequestBytes) + `"]}`, true, 413},
	} {
		if got := post(tc.body, tc.upgrade); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if n := len(e.exec.reqs); n != 0 {
		t.Errorf("%d sessions were started by refused requests", n)
	}
}

// TestExecSessionLimit: an authenticated peer cannot make init hold more
// than 8 sessions; closing one frees its slot.
func TestExecSessionLimit(t *testing.T) {
	e := newExecEnv(t)
	c := e.client(t, token)
	var open []*mgmt.ExecSession
	for i := 0; i < 8; i++ {
		s, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"cat"}})
		if err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
		open = append(open, s)
	}
	if _, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"cat"}}); !errors.Is(err, mgmt.ErrConflict) {
		t.Fatalf("9th session: %v, want ErrConflict", err)
	}
	open[0].Close()
	// The agent sees the close and frees the slot.
	select {
	case <-e.exec.session(0).closed:
	case <-time.After(10 * time.Second):
		t.Fatal("closing the client's side did not close the session in the agent (the command would live on)")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"cat"}})
		if err == nil {
			s.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing one of 8 sessions: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range open[1:] {
		s.Close()
	}
}

// TestExecOversizedFrame performs the attack on the frame bound: after
// the switch, a header announcing 1 GiB. The agent must not read (or
// allocate) it: it ends the session and kills the command.
func TestExecOversizedFrame(t *testing.T) {
	e := newExecEnv(t)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"service":"box","argv":["cat"]}`
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: ingot\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		mgmt.PathExec, token, mgmt.ExecUpgrade, len(body), body)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %s, want 101", resp.Status)
	}
	// Type stdin, length 1 GiB, then a few bytes of it.
	if _, err := conn.Write([]byte{byte(mgmt.FrameStdin), 0x40, 0, 0, 0, 'a', 'b', 'c'}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.exec.session(0).closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent kept the session after a frame over the bound")
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Errorf("the agent did not close the connection: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.log(), "announces 1073741824 bytes") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(e.log(), "announces 1073741824 bytes") {
		t.Errorf("agent log does not say why the session ended:\n%s", e.log())
	}
}

// TestExecOverTLS: the switch works on the Pi's transport, TLS over TCP
// with a pinned certificate (the connection taken over is the TLS one).
func TestExecOverTLS(t *testing.T) {
	ex := &fakeExecer{}
	a, err := agent.New(agent.Deps{Info: &fakeInfo{}, Exec: ex}, hashHex([]byte(token)))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, pin, err := mgmt.GenerateCertificate("exec-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := agent.ListenTLS(tl, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, l) }()
	defer func() { cancel(); <-served }()
	c, err := mgmt.NewClient("https://"+tl.Addr().String(), token, mgmt.WithCertSHA256(pin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.Exec(t.Context(), mgmt.ExecRequest{Service: "box", Argv: []string{"cat"}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := sess.Run(strings.NewReader("over tls\nexit 5\n"), &out, io.Discard)
	if err != nil || code != 5 || out.String() != "OVER TLS\n" {
		t.Errorf("over TLS: exit %d, %v, output %q; want 5 and \"OVER TLS\\n\"", code, err, out.String())
	}
}
