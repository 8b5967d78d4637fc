package wan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// In-memory networks for the link tests. Everything blocks on channels
// created inside the test's synctest bubble, so the bubble's fake clock
// advances only when the relay is idle and timings are exact.

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

var errRefused = errors.New("connection refused")

// memListener is a net.Listener of net.Pipe connections made by dial.
type memListener struct {
	name  memAddr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener(name string) *memListener {
	return &memListener{name: memAddr(name), conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return l.name }

// dial connects to the listener; it blocks until the listener accepts.
func (l *memListener) dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.done:
		return nil, errRefused
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// packetNet is an in-memory datagram network; a datagram to an address with
// no socket, or to a full socket, is dropped, as UDP would.
type packetNet struct {
	mu    sync.Mutex
	conns map[string]*memPacketConn
	next  int
}

type datagram struct {
	data []byte
	from net.Addr
	at   time.Time
}

type memPacketConn struct {
	net  *packetNet
	addr memAddr
	in   chan datagram
	done chan struct{}
	once sync.Once
}

func newPacketNet() *packetNet { return &packetNet{conns: map[string]*memPacketConn{}} }

func (n *packetNet) listen(name string) *memPacketConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if name == "" {
		n.next++
		name = fmt.Sprintf("ephemeral-%d", n.next)
	}
	c := &memPacketConn{net: n, addr: memAddr(name), in: make(chan datagram, 4096), done: make(chan struct{})}
	n.conns[name] = c
	return c
}

func (c *memPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.data), d.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

// read is ReadFrom for tests, with the arrival time.
func (c *memPacketConn) read() (datagram, bool) {
	select {
	case d := <-c.in:
		d.at = time.Now()
		return d, true
	case <-c.done:
		return datagram{}, false
	}
}

func (c *memPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.net.mu.Lock()
	dst := c.net.conns[addr.String()]
	c.net.mu.Unlock()
	if dst == nil {
		return len(b), nil
	}
	select {
	case dst.in <- datagram{data: append([]byte(nil), b...), from: c.addr}:
	default:
	}
	return len(b), nil
}

func (c *memPacketConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.net.mu.Lock()
		delete(c.net.conns, string(c.addr))
		c.net.mu.Unlock()
	})
	return nil
}

func (c *memPacketConn) LocalAddr() net.Addr              { return c.addr }
func (c *memPacketConn) SetDeadline(time.Time) error      { return nil }
func (c *memPacketConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memPacketConn) SetWriteDeadline(time.Time) error { return nil }
func (n *packetNet) listener() func() (net.PacketConn, error) {
	return func() (net.PacketConn, error) { return n.listen(""), nil }
}
