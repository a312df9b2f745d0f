package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmpConn is a minimal QEMU Machine Protocol client: enough to learn why a
// guest stopped and to ask it to power down.
type qmpConn struct {
	conn net.Conn
	enc  *json.Encoder

	mu       sync.Mutex
	shutdown string // reason of the last SHUTDOWN event
	replies  chan qmpMessage
	closed   chan struct{}
}

type qmpMessage struct {
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	QMP json.RawMessage `json:"QMP"`
}

// dialQMP connects to QEMU's QMP socket, retrying until QEMU has created it.
func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var conn net.Conn
	var err error
	for {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	q := &qmpConn{conn: conn, enc: json.NewEncoder(conn), replies: make(chan qmpMessage, 4), closed: make(chan struct{})}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		conn.Close()
		return nil, fmt.Errorf("qmp: no greeting from %s: %v", path, sc.Err())
	}
	go q.readLoop(sc)
	if _, err := q.execute(ctx, "qmp_capabilities"); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) readLoop(sc *bufio.Scanner) {
	defer close(q.closed)
	for sc.Scan() {
		var m qmpMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Event == "SHUTDOWN" {
			var d struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(m.Data, &d)
			q.mu.Lock()
			q.shutdown = d.Reason
			q.mu.Unlock()
			continue
		}
		if m.Event != "" {
			continue
		}
		select {
		case q.replies <- m:
		default:
		}
	}
}

func (q *qmpConn) execute(ctx context.Context, cmd string) (json.RawMessage, error) {
	if err := q.enc.Encode(map[string]string{"execute": cmd}); err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	select {
	case m := <-q.replies:
		if m.Error != nil {
			return nil, fmt.Errorf("qmp: %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		return m.Return, nil
	case <-q.closed:
		return nil, fmt.Errorf("qmp: %s: connection closed", cmd)
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp: %s: %w", cmd, ctx.Err())
	}
}

// shutdownReason returns the reason QEMU gave in its last SHUTDOWN event,
// e.g. "guest-shutdown", "guest-reset", "guest-panic", "host-qmp-quit".
func (q *qmpConn) shutdownReason() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shutdown
}

func (q *qmpConn) Close() error { return q.conn.Close() }
