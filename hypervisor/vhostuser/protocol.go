package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// request is a vhost-user front-end message type (docs/interop/vhost-user.rst).
type request uint32

const (
	reqGetFeatures         request = 1
	reqSetFeatures         request = 2
	reqSetOwner            request = 3
	reqResetOwner          request = 4
	reqSetMemTable         request = 5
	reqSetLogBase          request = 6
	reqSetLogFD            request = 7
	reqSetVringNum         request = 8
	reqSetVringAddr        request = 9
	reqSetVringBase        request = 10
	reqGetVringBase        request = 11
	reqSetVringKick        request = 12
	reqSetVringCall        request = 13
	reqSetVringErr         request = 14
	reqGetProtocolFeatures request = 15
	reqSetProtocolFeatures request = 16
	reqGetQueueNum         request = 17
	reqSetVringEnable      request = 18
	reqGetConfig           request = 24
	reqSetConfig           request = 25
)

var requestNames = map[request]string{
	reqGetFeatures:         "GET_FEATURES",
	reqSetFeatures:         "SET_FEATURES",
	reqSetOwner:            "SET_OWNER",
	reqResetOwner:          "RESET_OWNER",
	reqSetMemTable:         "SET_MEM_TABLE",
	reqSetLogBase:          "SET_LOG_BASE",
	reqSetLogFD:            "SET_LOG_FD",
	reqSetVringNum:         "SET_VRING_NUM",
	reqSetVringAddr:        "SET_VRING_ADDR",
	reqSetVringBase:        "SET_VRING_BASE",
	reqGetVringBase:        "GET_VRING_BASE",
	reqSetVringKick:        "SET_VRING_KICK",
	reqSetVringCall:        "SET_VRING_CALL",
	reqSetVringErr:         "SET_VRING_ERR",
	reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	reqGetQueueNum:         "GET_QUEUE_NUM",
	reqSetVringEnable:      "SET_VRING_ENABLE",
	reqGetConfig:           "GET_CONFIG",
	reqSetConfig:           "SET_CONFIG",
}

func (r request) String() string {
	if s, ok := requestNames[r]; ok {
		return s
	}
	return fmt.Sprintf("request(%d)", uint32(r))
}

// Header flags.
const (
	flagVersionMask = 0x3
	flagVersion     = 0x1
	flagReply       = 0x4
	flagNeedReply   = 0x8
)

const (
	headerBytes = 12
	// maxPayloadBytes bounds what we read for one message; the largest
	// message we accept is GET_CONFIG with 256 bytes of config space.
	maxPayloadBytes = 4096
	// maxFDsPerMessage is VHOST_MEMORY_BASELINE_NREGIONS, the most fds any
	// message carries (SET_MEM_TABLE).
	maxFDsPerMessage = 8
	// maxConfigBytes is VHOST_USER_MAX_CONFIG_SIZE.
	maxConfigBytes = 256
)

// virtio and vhost-user feature bits.
const (
	featIndirectDesc     uint64 = 1 << 28
	featEventIdx         uint64 = 1 << 29
	featProtocolFeatures uint64 = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	featVersion1         uint64 = 1 << 32

	offeredFeatures = featVersion1 | featProtocolFeatures | featEventIdx | featIndirectDesc
)

// vhost-user protocol feature bits.
const (
	protoMQ       uint64 = 1 << 0
	protoReplyAck uint64 = 1 << 3
	protoConfig   uint64 = 1 << 9

	offeredProtocolFeatures = protoMQ | protoReplyAck | protoConfig
)

const (
	// numQueues: QEMU hands the back-end rx (0) and tx (1); it keeps the
	// event queue itself.
	numQueues = 2
	rxQueue   = 0
	txQueue   = 1

	// Vring fd messages carry the queue index in the low byte of their u64
	// payload and bit 8 when no fd is attached.
	vringIndexMask = 0xff
	vringNoFD      = 1 << 8
)

// message is one vhost-user message with the fds that rode on it. The
// handler that uses an fd sets its slot to -1; the rest are closed.
type message struct {
	req     request
	flags   uint32
	payload []byte
	fds     []int
}

func (m *message) closeFDs() {
	for i, fd := range m.fds {
		if fd >= 0 {
			unix.Close(fd)
			m.fds[i] = -1
		}
	}
}

// takeFD hands over the single fd a message must carry.
func (m *message) takeFD() (int, error) {
	if len(m.fds) != 1 {
		return -1, fmt.Errorf("%v: got %d fds, want 1", m.req, len(m.fds))
	}
	fd := m.fds[0]
	m.fds[0] = -1
	return fd, nil
}

var errFraming = errors.New("vhost-user framing")

// readMessage reads one message. Errors are fatal for the connection: after
// a short or oversized message the stream cannot be resynchronised.
func readMessage(c *net.UnixConn) (message, error) {
	var hdr [headerBytes]byte
	oob := make([]byte, unix.CmsgSpace(maxFDsPerMessage*4))
	var m message
	got := 0
	for got < headerBytes {
		n, oobn, flags, _, err := c.ReadMsgUnix(hdr[got:], oob)
		if oobn > 0 {
			fds, perr := parseRights(oob[:oobn])
			m.fds = append(m.fds, fds...)
			if perr != nil {
				m.closeFDs()
				return message{}, fmt.Errorf("%w: control message: %v", errFraming, perr)
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			m.closeFDs()
			return message{}, fmt.Errorf("%w: too many fds in one message", errFraming)
		}
		if err != nil {
			m.closeFDs()
			if got > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return message{}, err
		}
		if n == 0 {
			m.closeFDs()
			return message{}, io.EOF
		}
		got += n
	}
	m.req = request(binary.LittleEndian.Uint32(hdr[0:]))
	m.flags = binary.LittleEndian.Uint32(hdr[4:])
	size := binary.LittleEndian.Uint32(hdr[8:])
	if m.flags&flagVersionMask != flagVersion {
		m.closeFDs()
		return message{}, fmt.Errorf("%w: %v: version %d, want 1", errFraming, m.req, m.flags&flagVersionMask)
	}
	if size > maxPayloadBytes {
		m.closeFDs()
		return message{}, fmt.Errorf("%w: %v: payload %d bytes, limit %d", errFraming, m.req, size, maxPayloadBytes)
	}
	m.payload = make([]byte, size)
	if _, err := io.ReadFull(c, m.payload); err != nil {
		m.closeFDs()
		return message{}, fmt.Errorf("%w: %v payload: %v", errFraming, m.req, err)
	}
	return m, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, cm := range msgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&cm)
		if err != nil {
			return fds, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// writeReply sends the reply to req with the given payload.
func writeReply(c *net.UnixConn, req request, payload []byte) error {
	buf := make([]byte, headerBytes+len(payload))
	binary.LittleEndian.PutUint32(buf[0:], uint32(req))
	binary.LittleEndian.PutUint32(buf[4:], flagVersion|flagReply)
	binary.LittleEndian.PutUint32(buf[8:], uint32(len(payload)))
	copy(buf[headerBytes:], payload)
	_, err := c.Write(buf)
	return err
}

func u64Payload(v uint64) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b
}

func parseU64(req request, p []byte) (uint64, error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("%v: payload %d bytes, want 8", req, len(p))
	}
	return binary.LittleEndian.Uint64(p), nil
}

// vringState is struct vhost_vring_state.
type vringState struct {
	index, num uint32
}

func parseVringState(req request, p []byte) (vringState, error) {
	if len(p) != 8 {
		return vringState{}, fmt.Errorf("%v: payload %d bytes, want 8", req, len(p))
	}
	s := vringState{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])}
	if s.index >= numQueues {
		return vringState{}, fmt.Errorf("%v: queue %d, have %d", req, s.index, numQueues)
	}
	return s, nil
}

func (s vringState) bytes() []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, s.index)
	binary.LittleEndian.PutUint32(b[4:], s.num)
	return b
}

// vringAddr is struct vhost_vring_addr; desc, used and avail are QEMU
// virtual addresses.
type vringAddr struct {
	index, flags           uint32
	desc, used, avail, log uint64
}

const vringAddrBytes = 40

func parseVringAddr(p []byte) (vringAddr, error) {
	if len(p) != vringAddrBytes {
		return vringAddr{}, fmt.Errorf("%v: payload %d bytes, want %d", reqSetVringAddr, len(p), vringAddrBytes)
	}
	a := vringAddr{
		index: binary.LittleEndian.Uint32(p),
		flags: binary.LittleEndian.Uint32(p[4:]),
		desc:  binary.LittleEndian.Uint64(p[8:]),
		used:  binary.LittleEndian.Uint64(p[16:]),
		avail: binary.LittleEndian.Uint64(p[24:]),
		log:   binary.LittleEndian.Uint64(p[32:]),
	}
	if a.index >= numQueues {
		return vringAddr{}, fmt.Errorf("%v: queue %d, have %d", reqSetVringAddr, a.index, numQueues)
	}
	return a, nil
}

// memRegion is one struct vhost_memory_region of SET_MEM_TABLE.
type memRegion struct {
	gpa, size, uva, mmapOffset uint64
}

const memRegionBytes = 32

func parseMemTable(p []byte) ([]memRegion, error) {
	if len(p) < 8 {
		return nil, fmt.Errorf("%v: payload %d bytes, want at least 8", reqSetMemTable, len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n == 0 || n > maxFDsPerMessage {
		return nil, fmt.Errorf("%v: %d regions, want 1..%d", reqSetMemTable, n, maxFDsPerMessage)
	}
	if want := 8 + int(n)*memRegionBytes; len(p) != want {
		return nil, fmt.Errorf("%v: payload %d bytes for %d regions, want %d", reqSetMemTable, len(p), n, want)
	}
	regions := make([]memRegion, n)
	for i := range regions {
		b := p[8+i*memRegionBytes:]
		r := memRegion{
			gpa:        binary.LittleEndian.Uint64(b),
			size:       binary.LittleEndian.Uint64(b[8:]),
			uva:        binary.LittleEndian.Uint64(b[16:]),
			mmapOffset: binary.LittleEndian.Uint64(b[24:]),
		}
		if r.size == 0 || r.size > maxRegionBytes {
			return nil, fmt.Errorf("%v: region %d: size %#x, want 1..%#x", reqSetMemTable, i, r.size, uint64(maxRegionBytes))
		}
		if r.gpa+r.size < r.gpa || r.uva+r.size < r.uva || r.mmapOffset > maxRegionBytes {
			return nil, fmt.Errorf("%v: region %d: gpa %#x uva %#x offset %#x size %#x overflows", reqSetMemTable, i, r.gpa, r.uva, r.mmapOffset, r.size)
		}
		for j := 0; j < i; j++ {
			o := regions[j]
			if r.gpa < o.gpa+o.size && o.gpa < r.gpa+r.size {
				return nil, fmt.Errorf("%v: region %d (gpa %#x+%#x) overlaps region %d", reqSetMemTable, i, r.gpa, r.size, j)
			}
		}
		regions[i] = r
	}
	return regions, nil
}

// configHeader is the head of GET_CONFIG/SET_CONFIG payloads.
type configHeader struct {
	offset, size, flags uint32
}

const configHeaderBytes = 12

func parseConfig(req request, p []byte) (configHeader, []byte, error) {
	if len(p) < configHeaderBytes {
		return configHeader{}, nil, fmt.Errorf("%v: payload %d bytes, want at least %d", req, len(p), configHeaderBytes)
	}
	h := configHeader{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:]), binary.LittleEndian.Uint32(p[8:])}
	if h.size > maxConfigBytes || int(h.size) != len(p)-configHeaderBytes {
		return configHeader{}, nil, fmt.Errorf("%v: config size %d with %d payload bytes", req, h.size, len(p))
	}
	return h, p[configHeaderBytes:], nil
}
