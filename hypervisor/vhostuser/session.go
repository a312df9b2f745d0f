package vhostuser

import (
	"errors"
	"io"
	"net"
)

// session is one vhost-user front-end connection (one QEMU process).
type session struct {
	conn *net.UnixConn
	done chan struct{}
}

func startSession(e *engine, c *net.UnixConn) *session {
	s := &session{conn: c, done: make(chan struct{})}
	go s.serve(e)
	return s
}

// close ends the session and waits until the engine has forgotten it.
func (s *session) close() {
	s.conn.Close()
	<-s.done
}

func (s *session) serve(e *engine) {
	defer close(s.done)
	defer s.conn.Close()
	defer e.call(e.endSession)
	for {
		m, err := readMessage(s.conn)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				e.log.Warn("vhostuser: front-end connection failed", "err", err)
			}
			return
		}
		var (
			reply    []byte
			hasReply bool
			herr     error
			replyAck bool
		)
		ok := e.call(func() {
			reply, hasReply, herr = e.handleMessage(&m)
			replyAck = e.protocolFeatures&protoReplyAck != 0
		})
		m.closeFDs()
		if !ok {
			return
		}
		if herr != nil {
			e.log.Warn("vhostuser: front-end message failed", "request", m.req.String(), "err", herr)
		} else {
			e.log.Debug("vhostuser: front-end message", "request", m.req.String(), "size", len(m.payload))
		}
		switch {
		case hasReply:
			err = writeReply(s.conn, m.req, reply)
		case replyAck && m.flags&flagNeedReply != 0:
			var status uint64
			if herr != nil {
				status = 1
			}
			err = writeReply(s.conn, m.req, u64Payload(status))
		}
		if err != nil {
			e.log.Warn("vhostuser: writing reply", "request", m.req.String(), "err", err)
			return
		}
	}
}
