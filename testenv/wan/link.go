package wan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// ErrLinkClosed is returned by [Link.Relay] after [Link.Close].
var ErrLinkClosed = errors.New("wan: link is closed")

// Link is a simulated WAN path between two sides, A and B, in user space
// (kernel netem is not available on every test machine). Traffic flows
// through relays that the link owns ([Link.Relay]): a relay listens on
// loopback on A's side and forwards to a target on B's side. What A sends
// takes the forward direction (A→B) and the answers the reverse one (B→A);
// each direction has its own [Shape] and can be partitioned on its own.
//
// A *Link is a view of the path from one side: [Link.Reverse] is the same
// path seen from B (testenv's Federation.Link(a, b) and (b, a) are the two
// views of the link between clusters a and b). All methods are safe for
// concurrent use and take effect at once, for traffic in flight too.
//
// Randomness (jitter, loss) comes from a PCG source per direction seeded from
// the link's seed, so a test that sends the same traffic in the same order
// sees the same drops and delays.
type Link struct {
	core     *linkCore
	fwd, rev int // indexes into core.dirs
	from, to string
}

type linkCore struct {
	dirs   [2]*direction
	ctx    context.Context // done when the link is closed
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	relays []relay
}

type relay interface {
	Addr() net.Addr
	Close() error
}

// NewLink returns a perfect link (no delay, no loss, no partition) between
// sides "A" and "B" whose random sources are seeded with seed. Close it to
// stop its relays.
func NewLink(seed uint64) *Link {
	return NewLinkStream(seed, 0, "A", "B")
}

// NewLinkStream is [NewLink] for one of many links that share a seed: the
// link's forward direction draws from PCG stream 2n of seed and its reverse
// direction from stream 2n+1, so links numbered 0, 1, 2, ... are independent
// and each is reproducible. a and b name the two sides (see [Link.String]).
func NewLinkStream(seed, n uint64, a, b string) *Link {
	ctx, cancel := context.WithCancel(context.Background())
	core := &linkCore{
		dirs:   [2]*direction{newDirection(seed, 2*n), newDirection(seed, 2*n+1)},
		ctx:    ctx,
		cancel: cancel,
	}
	return &Link{core: core, fwd: 0, rev: 1, from: a, to: b}
}

// String names the view, "A->B".
func (l *Link) String() string { return l.from + "->" + l.to }

// Reverse returns the same link seen from the other side.
func (l *Link) Reverse() *Link {
	return &Link{core: l.core, fwd: l.rev, rev: l.fwd, from: l.to, to: l.from}
}

// Set applies opts to both directions, on top of their current shapes:
//
//	link.Set(wan.Latency(30*time.Millisecond), wan.Loss(0.01))
//	link.Set(wan.Perfect()) // back to no impairment
func (l *Link) Set(opts ...Option) {
	l.core.dirs[l.fwd].set(opts)
	l.core.dirs[l.rev].set(opts)
}

// SetOneWay applies opts to the forward direction only (from this view's
// first side to its second).
func (l *Link) SetOneWay(opts ...Option) {
	l.core.dirs[l.fwd].set(opts)
}

// Shapes returns the forward and reverse shapes.
func (l *Link) Shapes() (forward, reverse Shape) {
	return l.core.dirs[l.fwd].getShape(), l.core.dirs[l.rev].getShape()
}

// Stats returns what the forward and reverse directions have done.
func (l *Link) Stats() (forward, reverse DirectionStats) {
	return l.core.dirs[l.fwd].getStats(), l.core.dirs[l.rev].getStats()
}

// Partition cuts both directions. UDP datagrams are dropped (also those in
// flight). TCP is blackholed, not refused: a new connection is accepted by
// the relay but not passed on until the link heals, and established
// connections stall, their bytes held, until then.
func (l *Link) Partition() {
	l.core.dirs[l.fwd].partition()
	l.core.dirs[l.rev].partition()
}

// PartitionOneWay cuts the forward direction only: an asymmetric partition.
// A TCP connection needs both directions to open.
func (l *Link) PartitionOneWay() {
	l.core.dirs[l.fwd].partition()
}

// Partitioned reports whether the forward and reverse directions are cut.
func (l *Link) Partitioned() (forward, reverse bool) {
	return l.core.dirs[l.fwd].isDown(), l.core.dirs[l.rev].isDown()
}

// Heal ends a partition in both directions.
func (l *Link) Heal() {
	l.core.dirs[l.fwd].heal()
	l.core.dirs[l.rev].heal()
}

// Relay starts a relay for network "tcp" or "udp" that listens on a free
// loopback port on this view's first side and forwards to target on its
// second side, and returns the address to use instead of target. It lives
// until the link is closed; after [Link.Close] it returns [ErrLinkClosed].
//
// A UDP relay keeps one upstream socket per client address (for the relay's
// lifetime), so the target sees each client as a distinct peer and its
// answers go back to the right client: QUIC works through it. Datagrams of
// up to 64 KiB are carried whole, each delayed and dropped on its own.
func (l *Link) Relay(network, target string) (string, error) {
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("wan: relay: %w", err)
		}
		d := net.Dialer{}
		if err := l.ServeTCP(ln, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", target)
		}); err != nil {
			return "", err
		}
		return ln.Addr().String(), nil
	case "udp":
		raddr, err := net.ResolveUDPAddr("udp", target)
		if err != nil {
			return "", fmt.Errorf("wan: relay target: %w", err)
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("wan: relay: %w", err)
		}
		if err := l.ServeUDP(pc, raddr, func() (net.PacketConn, error) {
			return net.ListenPacket("udp", "127.0.0.1:0")
		}); err != nil {
			return "", err
		}
		return pc.LocalAddr().String(), nil
	default:
		return "", fmt.Errorf("wan: relay network %q: must be tcp or udp", network)
	}
}

// ServeTCP is [Link.Relay] over a listener and dialer of the caller's
// choosing, such as in-memory ones in a testing/synctest bubble: it accepts
// connections on ln (this view's first side) and copies each, shaped, to a
// connection from dial (its second side). The link owns ln from then on and
// closes it on [Link.Close]; if the link is already closed, ServeTCP closes
// ln and returns [ErrLinkClosed]. dial's ctx is cancelled when the link
// closes; if dial fails, the client's connection is closed.
func (l *Link) ServeTCP(ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) error {
	return l.core.add(l.startTCPRelay(ln, dial))
}

// ServeUDP is [Link.Relay] over packet connections of the caller's choosing:
// it relays datagrams from the clients of pc (this view's first side) to
// target (its second side), each client through its own upstream socket made
// by listen on its first datagram, and the target's answers (only datagrams
// whose source is target) back to that client from pc. The link owns pc and
// the upstream sockets and closes them on [Link.Close]; if the link is
// already closed, ServeUDP closes pc and returns [ErrLinkClosed]. A datagram
// whose upstream socket cannot be made is dropped.
func (l *Link) ServeUDP(pc net.PacketConn, target net.Addr, listen func() (net.PacketConn, error)) error {
	return l.core.add(l.startUDPRelay(pc, target, listen))
}

func (c *linkCore) add(r relay) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = r.Close()
		return ErrLinkClosed
	}
	c.relays = append(c.relays, r)
	return nil
}

// Close stops every relay of the link and closes their connections.
func (l *Link) Close() error {
	c := l.core
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	relays := c.relays
	c.relays = nil
	c.mu.Unlock()
	c.cancel()
	var errs []error
	for _, r := range relays {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}
