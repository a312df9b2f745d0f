package vhostuser

import (
	"io"
	"testing"
)

// takeTxSlot reserves a tx slot for hand-made descriptors and returns its
// two descriptor indexes and buffer address.
func (vm *testVM) takeTxSlot() (d0, d1 uint16, buf uint64) {
	q := vm.q[txQueue]
	vm.reclaimTx()
	s := q.freeSlots[0]
	q.freeSlots = q.freeSlots[1:]
	return uint16(2 * s), uint16(2*s + 1), txBufBase + uint64(s)*txSlotBytes
}

// validHdr writes a valid RW header for g at buf.
func (vm *testVM) validHdr(g *gconn, buf uint64, payloadLen uint32) {
	h := g.hdr(opRW)
	h.len = payloadLen
	h.encode(vm.mem[buf:])
}

// TestHostileRings: a guest that breaks the ring protocol gets the device
// stopped (connections closed, new ones refused) until it resets the
// device, and the host process lives on.
func TestHostileRings(t *testing.T) {
	tests := []struct {
		name   string
		opts   harnessOpts
		inject func(vm *testVM, g *gconn)
	}{
		{"descriptor outside memory", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, _ := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, testMemBytes+0x1000, hdrBytes, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"descriptor across the end of memory", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, _ := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, testMemBytes-10, hdrBytes, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"address overflow", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, _ := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, ^uint64(0)-100, 0x1000, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"head out of range", harnessOpts{}, func(vm *testVM, g *gconn) {
			vm.makeAvail(vm.q[txQueue], 200)
		}},
		{"next out of range", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, 0)
			vm.putDesc(vm.q[txQueue], d0, buf, hdrBytes, descFlagNext, 500)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"descriptor loop", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, d1, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, 0)
			vm.putDesc(vm.q[txQueue], d0, buf, hdrBytes, descFlagNext, d1)
			vm.putDesc(vm.q[txQueue], d1, buf, hdrBytes, descFlagNext, d0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"self loop", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, 0)
			vm.putDesc(vm.q[txQueue], d0, buf, 1, descFlagNext, d0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"avail index leaps ahead", harnessOpts{}, func(vm *testVM, g *gconn) {
			q := vm.q[txQueue]
			q.nextAvail += 300
			vm.makeAvail(q)
		}},
		{"readable after writable", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, d1, buf := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, buf, hdrBytes, descFlagWrite|descFlagNext, d1)
			vm.putDesc(vm.q[txQueue], d1, buf+hdrBytes, 10, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"indirect not negotiated", harnessOpts{features: featVersion1 | featProtocolFeatures | featEventIdx}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			table := buf + 0x10000
			vm.validHdr(g, buf, 0)
			vm.put64(table, buf)
			vm.put32(table+8, hdrBytes)
			vm.putDesc(vm.q[txQueue], d0, table, 16, descFlagIndirect, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"nested indirect", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			table := buf + 0x10000
			vm.put64(table, table)
			vm.put32(table+8, 16)
			vm.put16(table+12, descFlagIndirect)
			vm.putDesc(vm.q[txQueue], d0, table, 16, descFlagIndirect, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"indirect with next", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, d1, buf := vm.takeTxSlot()
			table := buf + 0x10000
			vm.validHdr(g, buf, 0)
			vm.put64(table, buf)
			vm.put32(table+8, hdrBytes)
			vm.putDesc(vm.q[txQueue], d0, table, 16, descFlagIndirect|descFlagNext, d1)
			vm.putDesc(vm.q[txQueue], d1, buf, hdrBytes, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"indirect table length not a multiple of 16", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, buf+0x10000, 20, descFlagIndirect, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"indirect table too large", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, buf, 16*(maxIndirectDescs+1), descFlagIndirect, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"indirect table outside memory", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, _ := vm.takeTxSlot()
			vm.putDesc(vm.q[txQueue], d0, testMemBytes-16, 32, descFlagIndirect, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"indirect loop", harnessOpts{}, func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			table := buf + 0x10000
			vm.validHdr(g, buf, 0)
			for i := range uint64(2) {
				vm.put64(table+16*i, buf)
				vm.put32(table+16*i+8, hdrBytes)
				vm.put16(table+16*i+12, descFlagNext)
				vm.put16(table+16*i+14, uint16(1-i))
			}
			vm.putDesc(vm.q[txQueue], d0, table, 32, descFlagIndirect, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}},
		{"rx descriptor outside memory", harnessOpts{}, func(vm *testVM, g *gconn) {
			// Replace every rx buffer the device has not used yet.
			q := vm.q[rxQueue]
			for i := range q.size {
				vm.putDesc(q, i, testMemBytes, testRxBufLen, descFlagWrite, 0)
			}
			g.send(opCreditRequest, 0, nil) // make the device write
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := newTestVM(t, tt.opts)
			hc, g := vm.hostConnect(5000, 256<<10)
			tt.inject(vm, g)
			expectClosed(t, hc)
			// Broken until reset: host connections are refused.
			c := vm.hostDial(5001)
			expectClosed(t, c)

			// The guest resets the device; it works again.
			vm.stopRings()
			vm.startRings(1, [2]uint16{0, 0})
			vm.postRxBuffers()
			hc, g = vm.hostConnect(5000, 256<<10)
			g.send(opRW, 0, []byte("ok"))
			buf := make([]byte, 2)
			if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "ok" {
				t.Fatalf("after reset: host read %q, %v", buf, err)
			}
		})
	}
}

// TestHostilePackets: a bad packet costs the guest one connection, or
// nothing when it names none; the device keeps working.
func TestHostilePackets(t *testing.T) {
	tests := []struct {
		name      string
		inject    func(vm *testVM, g *gconn)
		wantReset bool
	}{
		{"short header", func(vm *testVM, g *gconn) {
			d0, _, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, 0)
			vm.putDesc(vm.q[txQueue], d0, buf, hdrBytes-1, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}, false},
		{"header split over descriptors", func(vm *testVM, g *gconn) {
			// Legal and odd: 10 + 34 bytes of header, then payload.
			d0, d1, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, 0)
			vm.putDesc(vm.q[txQueue], d0, buf, 10, descFlagNext, d1)
			vm.putDesc(vm.q[txQueue], d1, buf+10, hdrBytes-10, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}, false},
		{"payload length beyond the buffer", func(vm *testVM, g *gconn) {
			d0, d1, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, 1000)
			vm.putDesc(vm.q[txQueue], d0, buf, hdrBytes, descFlagNext, d1)
			vm.putDesc(vm.q[txQueue], d1, buf+hdrBytes, 10, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}, true},
		{"payload over 64 KiB", func(vm *testVM, g *gconn) {
			d0, d1, buf := vm.takeTxSlot()
			vm.validHdr(g, buf, maxPacketPayloadBytes+1)
			vm.putDesc(vm.q[txQueue], d0, buf, hdrBytes, descFlagNext, d1)
			vm.putDesc(vm.q[txQueue], d1, buf+hdrBytes, maxPacketPayloadBytes+1, 0, 0)
			vm.makeAvail(vm.q[txQueue], d0)
		}, true},
		{"request on an open connection", func(vm *testVM, g *gconn) {
			g.send(opRequest, 0, nil)
		}, true},
		{"response on an open connection", func(vm *testVM, g *gconn) {
			g.send(opResponse, 0, nil)
		}, true},
		{"unknown op", func(vm *testVM, g *gconn) {
			g.send(op(77), 0, nil)
		}, true},
		{"tiny rx buffers", func(vm *testVM, g *gconn) {
			q := vm.q[rxQueue]
			for i := range q.size {
				vm.putDesc(q, i, rxBufAddr(i), 20, descFlagWrite, 0)
			}
			g.send(opCreditRequest, 0, nil)
			// The device hands the unusable buffers back empty; the
			// guest posts proper ones and gets its answer.
			vm.expect(opCreditUpdate)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := newTestVM(t, harnessOpts{})
			hc, g := vm.hostConnect(5000, 256<<10)
			tt.inject(vm, g)
			if tt.wantReset {
				p := vm.expect(opRST)
				g.check(p.hdr)
				expectClosed(t, hc)
			} else {
				g.send(opRW, 0, []byte("alive"))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "alive" {
					t.Fatalf("host read %q, %v", buf, err)
				}
			}
			// The device still serves new connections.
			hc2, g2 := vm.hostConnect(5001, 256<<10)
			hc2.Write([]byte("fine"))
			if got := g2.recvData(4); string(got) != "fine" {
				t.Fatalf("new connection: guest got %q", got)
			}
		})
	}
}
