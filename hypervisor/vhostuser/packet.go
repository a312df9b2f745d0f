package vhostuser

import (
	"encoding/binary"
	"fmt"
)

// virtio-vsock packet header (struct virtio_vsock_hdr, all little-endian).
const hdrBytes = 44

// Operations.
type op uint16

const (
	opRequest       op = 1
	opResponse      op = 2
	opRST           op = 3
	opShutdown      op = 4
	opRW            op = 5
	opCreditUpdate  op = 6
	opCreditRequest op = 7
)

var opNames = [...]string{"INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE", "CREDIT_REQUEST"}

func (o op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint16(o))
}

const (
	typeStream = 1

	shutdownRcv  = 1 // the sender will receive no more
	shutdownSend = 2 // the sender will send no more
	shutdownBoth = shutdownRcv | shutdownSend

	hostCID = 2

	// maxPacketPayloadBytes is VIRTIO_VSOCK_MAX_PKT_BUF_SIZE: the most
	// payload Linux puts in one packet, and the most we accept.
	maxPacketPayloadBytes = 64 << 10
)

type header struct {
	srcCID, dstCID   uint64
	srcPort, dstPort uint32
	len              uint32
	typ              uint16
	op               op
	flags            uint32
	bufAlloc, fwdCnt uint32
}

func decodeHeader(b []byte) header {
	_ = b[hdrBytes-1]
	return header{
		srcCID:   binary.LittleEndian.Uint64(b[0:]),
		dstCID:   binary.LittleEndian.Uint64(b[8:]),
		srcPort:  binary.LittleEndian.Uint32(b[16:]),
		dstPort:  binary.LittleEndian.Uint32(b[20:]),
		len:      binary.LittleEndian.Uint32(b[24:]),
		typ:      binary.LittleEndian.Uint16(b[28:]),
		op:       op(binary.LittleEndian.Uint16(b[30:])),
		flags:    binary.LittleEndian.Uint32(b[32:]),
		bufAlloc: binary.LittleEndian.Uint32(b[36:]),
		fwdCnt:   binary.LittleEndian.Uint32(b[40:]),
	}
}

func (h *header) encode(b []byte) {
	_ = b[hdrBytes-1]
	binary.LittleEndian.PutUint64(b[0:], h.srcCID)
	binary.LittleEndian.PutUint64(b[8:], h.dstCID)
	binary.LittleEndian.PutUint32(b[16:], h.srcPort)
	binary.LittleEndian.PutUint32(b[20:], h.dstPort)
	binary.LittleEndian.PutUint32(b[24:], h.len)
	binary.LittleEndian.PutUint16(b[28:], h.typ)
	binary.LittleEndian.PutUint16(b[30:], uint16(h.op))
	binary.LittleEndian.PutUint32(b[32:], h.flags)
	binary.LittleEndian.PutUint32(b[36:], h.bufAlloc)
	binary.LittleEndian.PutUint32(b[40:], h.fwdCnt)
}

func (h header) String() string {
	return fmt.Sprintf("%v %d:%d->%d:%d len %d flags %#x buf_alloc %d fwd_cnt %d",
		h.op, h.srcCID, h.srcPort, h.dstCID, h.dstPort, h.len, h.flags, h.bufAlloc, h.fwdCnt)
}

// txPacket is a packet the guest sent, parsed from a tx chain.
type txPacket struct {
	hdr     header
	payload []byte // a private copy; only for RW
}

// packetError is a malformed packet that has a readable header, so the
// connection it names can be reset.
type packetError struct {
	hdr header
	msg string
}

func (e *packetError) Error() string { return fmt.Sprintf("packet %v: %s", e.hdr, e.msg) }

// parseTxPacket reads a guest packet out of a chain's readable segments.
// It copies what it keeps, so the guest cannot change a packet after it was
// checked. Without a whole header there is nothing to answer, so that error
// is a plain one; errors about a packet with a header are *packetError.
func parseTxPacket(segs [][]byte, readBytes uint64) (txPacket, error) {
	if readBytes < hdrBytes {
		return txPacket{}, fmt.Errorf("tx chain of %d readable bytes has no %d-byte header", readBytes, hdrBytes)
	}
	var hb [hdrBytes]byte
	gather(segs, 0, hb[:])
	p := txPacket{hdr: decodeHeader(hb[:])}
	if p.hdr.op != opRW {
		return p, nil
	}
	if p.hdr.len > maxPacketPayloadBytes {
		return p, &packetError{p.hdr, fmt.Sprintf("payload length %d over %d", p.hdr.len, maxPacketPayloadBytes)}
	}
	if uint64(p.hdr.len) > readBytes-hdrBytes {
		return p, &packetError{p.hdr, fmt.Sprintf("payload length %d but the buffer holds %d", p.hdr.len, readBytes-hdrBytes)}
	}
	if p.hdr.len > 0 {
		p.payload = make([]byte, p.hdr.len)
		gather(segs, hdrBytes, p.payload)
	}
	return p, nil
}
