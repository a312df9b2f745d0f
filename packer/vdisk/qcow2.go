package vdisk

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
)

// qcow2, version 3 (QEMU's docs/interop/qcow2.txt), with 64 KiB clusters
// and 16-bit refcounts. The file is laid out in one pass, in this order:
//
//	cluster 0      header (104 bytes) and the end of header extensions
//	L1 table       one 8-byte entry per 512 MiB of the disk
//	refcount table one 8-byte entry per refcount block
//	refcount blocks one 16-bit refcount (1) per cluster of the file
//	L2 tables      one per 512 MiB region that holds data
//	data clusters  the image's non-zero 64 KiB blocks, in disk order
//
// Every used cluster has refcount 1 and every L1 and L2 entry carries the
// COPIED flag, as qemu-img writes them; a cluster with no L2 entry reads as
// zeros.
const (
	qcowMagic         = 0x514649fb // "QFI\xfb"
	qcowVersion       = 3
	qcowClusterBits   = 16
	qcowClusterBytes  = 1 << qcowClusterBits
	qcowHeaderBytes   = 104
	qcowRefcountOrder = 4 // 16-bit refcounts
	qcowL2Entries     = qcowClusterBytes / 8
	qcowRefsPerBlock  = qcowClusterBytes * 8 >> qcowRefcountOrder
	qcowOflagCopied   = 1 << 63
	// qcowMaxL1Entries is QEMU's limit on the L1 table (32 MiB of entries).
	qcowMaxL1Entries = 32 << 20 / 8
)

func writeQCOW2(ctx context.Context, out *os.File, m *image) error {
	if blockBytes != qcowClusterBytes {
		return fmt.Errorf("internal: scan block %d bytes, qcow2 cluster %d", blockBytes, qcowClusterBytes)
	}
	s, err := m.scan(ctx)
	if err != nil {
		return err
	}
	const c = qcowClusterBytes
	l2Span := int64(c) * qcowL2Entries // bytes of disk one L2 table maps
	l1Entries := (m.size + l2Span - 1) / l2Span
	if l1Entries > qcowMaxL1Entries {
		return fmt.Errorf("%w: %d bytes need %d L1 entries, qcow2 readers take %d", errSize, m.size, l1Entries, qcowMaxL1Entries)
	}
	l1Clusters := clustersFor(l1Entries*8, c)
	// The L2 tables, by L1 index, of the regions holding data.
	var l2Index []int64
	for _, b := range s.data {
		r := b * blockBytes / l2Span
		if len(l2Index) == 0 || l2Index[len(l2Index)-1] != r {
			l2Index = append(l2Index, r)
		}
	}
	fixed := 1 + l1Clusters + int64(len(l2Index)) + int64(len(s.data))
	// Refcount blocks cover every cluster, themselves and the table
	// included: grow the estimate until it fits.
	var rtClusters, rbCount int64
	for {
		total := fixed + rtClusters + rbCount
		nb := (total + qcowRefsPerBlock - 1) / qcowRefsPerBlock
		nt := clustersFor(nb*8, c)
		if nb == rbCount && nt == rtClusters {
			break
		}
		rbCount, rtClusters = nb, nt
	}
	total := fixed + rtClusters + rbCount
	l1Off := int64(1) * c
	rtOff := l1Off + l1Clusters*c
	rbOff := rtOff + rtClusters*c
	l2Off := rbOff + rbCount*c
	dataOff := l2Off + int64(len(l2Index))*c

	h := make([]byte, c)
	be := binary.BigEndian
	be.PutUint32(h[0:], qcowMagic)
	be.PutUint32(h[4:], qcowVersion)
	be.PutUint32(h[20:], qcowClusterBits)
	be.PutUint64(h[24:], uint64(m.size))
	be.PutUint32(h[36:], uint32(l1Entries))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(rtOff))
	be.PutUint32(h[56:], uint32(rtClusters))
	be.PutUint32(h[96:], qcowRefcountOrder)
	be.PutUint32(h[100:], qcowHeaderBytes)
	// Bytes 104..111 stay zero: the end-of-extensions marker.
	if _, err := out.WriteAt(h, 0); err != nil {
		return err
	}

	l1 := make([]byte, l1Clusters*c)
	for i, r := range l2Index {
		be.PutUint64(l1[r*8:], uint64(l2Off+int64(i)*c)|qcowOflagCopied)
	}
	if _, err := out.WriteAt(l1, l1Off); err != nil {
		return err
	}

	rt := make([]byte, rtClusters*c)
	for i := range rbCount {
		be.PutUint64(rt[i*8:], uint64(rbOff+i*c))
	}
	if _, err := out.WriteAt(rt, rtOff); err != nil {
		return err
	}
	rb := make([]byte, c)
	for i := range rbCount {
		clear(rb)
		for k := range int64(qcowRefsPerBlock) {
			if i*qcowRefsPerBlock+k >= total {
				break
			}
			be.PutUint16(rb[k*2:], 1)
		}
		if _, err := out.WriteAt(rb, rbOff+i*c); err != nil {
			return err
		}
	}

	l2 := make([]byte, c)
	next := 0 // index into s.data
	for i, r := range l2Index {
		clear(l2)
		for ; next < len(s.data) && s.data[next]*blockBytes/l2Span == r; next++ {
			b := s.data[next]
			slot := b - r*qcowL2Entries
			be.PutUint64(l2[slot*8:], uint64(dataOff+int64(next)*c)|qcowOflagCopied)
		}
		if _, err := out.WriteAt(l2, l2Off+int64(i)*c); err != nil {
			return err
		}
	}

	buf := make([]byte, c)
	for k, b := range s.data {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.readBlock(b, buf); err != nil {
			return err
		}
		if _, err := out.WriteAt(buf, dataOff+int64(k)*c); err != nil {
			return err
		}
	}
	return out.Truncate(total * c)
}

// clustersFor returns the clusters of c bytes that hold n bytes (at least 1).
func clustersFor(n, c int64) int64 { return max(1, (n+c-1)/c) }
