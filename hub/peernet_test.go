package hub

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshfed/meshfed/testenv/wan"
)

// peerNet puts the servers of a procHub behind WAN relays, one wan.Link per
// ordered pair of servers, so that a test can cut a server off from the
// others on every path between servers: Raft, gossip (UDP and TCP) and the
// forwarding of writes and read indexes over gRPC.
//
// Each server binds 127.0.0.1 and advertises an address of its own
// (--advertise 127.0.0.<base+i>), where the relays listen on the server's
// own port numbers. Peers learn those addresses from gossip (Raft reaches a
// peer by server ID at the address it gossips), so everything one server
// sends another goes through a relay, and no product change is needed.
//
// A relay in front of server j must know which server a connection or
// datagram comes from, to send it over that pair's link: a gossip datagram
// comes from its sender's bound socket (127.0.0.1:<gossip port>), and a
// TCP connection's other end belongs to a process, which Linux's /proc
// names. Traffic from anyone else (the test itself) takes a link per
// destination that is never cut.
type peerNet struct {
	t       *testing.T
	servers []*procServer
	// links[i][j] carries what i sends to j (forward) and j's answers on
	// connections i opened (reverse); links[n][j] carries traffic from
	// outside the hub.
	links [][]*wan.Link

	unknown atomic.Int64
	wg      sync.WaitGroup
	closers []func() error
}

// peerNetBase is the last octet of the first advertised address.
const peerNetBase = 140

// peerNetIP is the address server i advertises behind a peerNet.
func peerNetIP(i int) string { return "127.0.0." + strconv.Itoa(peerNetBase+i) }

// usablePeerNetIPs skips the test if the loopback addresses are not usable.
func usablePeerNetIPs(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(peerNetIP(i), "0"))
		if err != nil {
			t.Fatalf("loopback address %s (all of 127.0.0.0/8 is loopback on Linux): %v", peerNetIP(i), err)
		}
		_ = ln.Close()
	}
}

// newPeerNet starts the relays for h's servers, whose ports and advertised
// addresses are set but which have not started yet (procHubOptions.beforeStart).
func newPeerNet(t *testing.T, h *procHub, seed uint64) *peerNet {
	t.Helper()
	n := len(h.servers)
	pn := &peerNet{t: t, servers: h.servers}
	stream := uint64(0)
	for i := 0; i <= n; i++ {
		row := make([]*wan.Link, n)
		for j := range n {
			if i == j {
				continue
			}
			from := "test"
			if i < n {
				from = h.servers[i].name
			}
			row[j] = wan.NewLinkStream(seed, stream, from, h.servers[j].name)
			stream++
			pn.closers = append(pn.closers, row[j].Close)
		}
		pn.links = append(pn.links, row)
	}
	t.Cleanup(pn.close)
	for j, p := range h.servers {
		if p.advertiseIP == p.bindAddr {
			t.Fatalf("peerNet: %s advertises its bind address %s", p.name, p.bindAddr)
		}
		for _, port := range []int{p.grpcPort, p.raftPort, p.gossipPort} {
			if err := pn.serveTCP(j, port); err != nil {
				t.Fatal(err)
			}
		}
		if err := pn.serveUDP(j, p.gossipPort); err != nil {
			t.Fatal(err)
		}
	}
	return pn
}

func (pn *peerNet) close() {
	for _, c := range pn.closers {
		_ = c()
	}
	pn.wg.Wait()
}

// isolate cuts server i off from every other server, both ways.
func (pn *peerNet) isolate(i int) {
	for j := range pn.servers {
		if j != i {
			pn.links[i][j].Partition()
			pn.links[j][i].Partition()
		}
	}
}

// heal ends every partition.
func (pn *peerNet) heal() {
	for i := range pn.servers {
		for j := range pn.servers {
			if j != i {
				pn.links[i][j].Heal()
			}
		}
	}
}

// serveTCP listens at server j's advertised address on port and hands each
// connection to the link from the server that opened it.
func (pn *peerNet) serveTCP(j, port int) error {
	p := pn.servers[j]
	ln, err := net.Listen("tcp", hostPort(p.advertiseIP, port))
	if err != nil {
		return fmt.Errorf("peerNet: %w", err)
	}
	pn.closers = append(pn.closers, ln.Close)
	target := hostPort(p.bindAddr, port)
	var d net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", target) }
	// One in-memory listener per source, served by that pair's link.
	srcs := make([]*chanListener, len(pn.servers)+1)
	for i := range srcs {
		if i == j {
			continue
		}
		srcs[i] = newChanListener(ln.Addr())
		if err := pn.links[i][j].ServeTCP(srcs[i], dial); err != nil {
			return err
		}
	}
	pn.wg.Add(1)
	go func() {
		defer pn.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			src := pn.tcpSource(c)
			if src < 0 || src == j {
				pn.unknown.Add(1)
				src = len(pn.servers)
			}
			if !srcs[src].deliver(c) {
				_ = c.Close()
			}
		}
	}()
	return nil
}

// serveUDP listens at server j's advertised gossip address and hands each
// datagram to the link from the server whose gossip socket sent it.
func (pn *peerNet) serveUDP(j, port int) error {
	p := pn.servers[j]
	pc, err := net.ListenPacket("udp", hostPort(p.advertiseIP, port))
	if err != nil {
		return fmt.Errorf("peerNet: %w", err)
	}
	pn.closers = append(pn.closers, pc.Close)
	target, err := net.ResolveUDPAddr("udp", hostPort(p.bindAddr, port))
	if err != nil {
		return err
	}
	listen := func() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.1:0") }
	srcs := make([]*demuxPacketConn, len(pn.servers)+1)
	for i := range srcs {
		if i == j {
			continue
		}
		srcs[i] = &demuxPacketConn{PacketConn: pc, in: make(chan datagram, 256), done: make(chan struct{})}
		if err := pn.links[i][j].ServeUDP(srcs[i], target, listen); err != nil {
			return err
		}
	}
	bySourcePort := map[int]int{}
	for i, o := range pn.servers {
		bySourcePort[o.gossipPort] = i
	}
	pn.wg.Add(1)
	go func() {
		defer pn.wg.Done()
		for {
			buf := make([]byte, 64<<10)
			nb, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			src, ok := bySourcePort[from.(*net.UDPAddr).Port]
			if !ok || src == j {
				pn.unknown.Add(1)
				src = len(pn.servers)
			}
			select {
			case srcs[src].in <- datagram{b: buf[:nb], from: from}:
			default: // a full queue drops, as a network would
			}
		}
	}()
	return nil
}

type datagram struct {
	b    []byte
	from net.Addr
}

// demuxPacketConn is the part of a shared packet socket that one source's
// datagrams arrive on; answers are written through the shared socket.
type demuxPacketConn struct {
	net.PacketConn
	in        chan datagram
	done      chan struct{}
	closeOnce sync.Once
}

func (c *demuxPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.b), d.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

// Close ends this source's reads; the shared socket is closed by peerNet.
func (c *demuxPacketConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

// chanListener is a net.Listener of connections accepted elsewhere.
type chanListener struct {
	addr      net.Addr
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// tcpSource returns the index of the server whose process owns the other
// end of c, a loopback connection, or -1.
func (pn *peerNet) tcpSource(c net.Conn) int {
	inode, err := loopbackPeerInode(c.RemoteAddr().(*net.TCPAddr), c.LocalAddr().(*net.TCPAddr))
	if err != nil {
		return -1
	}
	want := "socket:[" + inode + "]"
	for i, p := range pn.servers {
		pid := p.pid()
		if pid == 0 {
			continue
		}
		dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == want {
				return i
			}
		}
	}
	return -1
}

var errNoSocket = errors.New("peerNet: no such socket in /proc/net/tcp")

// loopbackPeerInode finds, in /proc/net/tcp, the socket whose local address
// is local and remote address remote, and returns its inode.
func loopbackPeerInode(local, remote *net.TCPAddr) (string, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	l, r := procNetAddr(local), procNetAddr(remote)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 9 && fields[1] == l && fields[2] == r {
			return fields[9], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errNoSocket
}

// procNetAddr formats an IPv4 address as /proc/net/tcp does: the address
// as a little-endian 32-bit hex number, then the port in hex.
func procNetAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	rev := []byte{ip[3], ip[2], ip[1], ip[0]}
	return strings.ToUpper(hex.EncodeToString(rev)) + ":" + fmt.Sprintf("%04X", a.Port)
}
