package udpgro

import (
	"encoding/binary"
	"net"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// groBatch is how many datagrams (each a run of packets) one receive
// takes: quic-go's own batch size.
const groBatch = 8

// groBufSize holds the largest datagram the kernel can coalesce.
const groBufSize = 1 << 16

// groOOBSize holds the control messages of one datagram: ECN (IP_TOS or
// IPV6_TCLASS), packet info for an unspecified bind address, and UDP_GRO.
const groOOBSize = 256

// groConn is a UDP socket with UDP_GRO that reads in batches for quic-go.
// ReadBatch is not safe for concurrent use: quic-go reads from one
// goroutine.
type groConn struct {
	*net.UDPConn
	batch *ipv4.PacketConn
	msgs  []ipv4.Message // the last receive; pending points into it
	// pending[next:] are the packets of the last receive not yet handed
	// over. The kernel bounds a coalesced datagram's packets (64 from a
	// NIC, 128 from a local GSO send), so pending holds at most
	// groBatch×128 and is reused.
	pending []groSegment
	next    int
	// runs counts the received datagrams that held more than one packet.
	runs atomic.Int64
}

// groSegment is one packet of a received datagram.
type groSegment struct {
	data []byte
	oob  []byte
	addr net.Addr
}

// Wrap returns c receiving with UDP GRO, for a quic.Transport, or c itself
// where the kernel refuses UDP_GRO. The returned socket is c's: closing
// either closes both.
func Wrap(c *net.UDPConn) net.PacketConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return c
	}
	g := &groConn{UDPConn: c, batch: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, groBatch)}
	for i := range g.msgs {
		g.msgs[i].Buffers = [][]byte{make([]byte, groBufSize)}
		g.msgs[i].OOB = make([]byte, groOOBSize)
	}
	return g
}

// ReadBatch fills ms with received packets, one per message, splitting
// coalesced datagrams; it receives from the socket only when the packets of
// the last receive are all handed over. Each message's buffer gets one
// packet (cut to the buffer, with MSG_TRUNC, if longer), its control
// messages and its source address.
func (g *groConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if g.next == len(g.pending) {
		g.pending, g.next = g.pending[:0], 0
		n, err := g.batch.ReadBatch(g.msgs, flags)
		if err != nil {
			return 0, err
		}
		for _, m := range g.msgs[:n] {
			data, oob := m.Buffers[0][:m.N], m.OOB[:m.NN]
			seg := groSegmentSize(oob)
			if seg <= 0 || seg >= len(data) {
				g.pending = append(g.pending, groSegment{data: data, oob: oob, addr: m.Addr})
				continue
			}
			g.runs.Add(1)
			for len(data) > 0 {
				k := min(seg, len(data))
				g.pending = append(g.pending, groSegment{data: data[:k], oob: oob, addr: m.Addr})
				data = data[k:]
			}
		}
	}
	n := 0
	for ; n < len(ms) && g.next < len(g.pending); n++ {
		s, m := g.pending[g.next], &ms[n]
		g.next++
		m.N = copy(m.Buffers[0], s.data)
		m.NN = copy(m.OOB, s.oob)
		m.Flags = 0
		if m.N < len(s.data) {
			m.Flags = unix.MSG_TRUNC
		}
		m.Addr = s.addr
	}
	return n, nil
}

// groSegmentSize returns the packet size the kernel coalesced a datagram
// at, from its UDP_GRO control message, or 0 when it carries one packet.
func groSegmentSize(oob []byte) int {
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO {
			switch len(body) {
			case 4:
				return int(int32(binary.NativeEndian.Uint32(body)))
			case 2:
				return int(binary.NativeEndian.Uint16(body))
			}
			return 0
		}
		oob = rest
	}
	return 0
}
