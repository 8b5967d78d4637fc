package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// ErrLinkClosed is returned by [Link.Relay] after [Link.Close].
var ErrLinkClosed = errors.New("testenv: link is closed")

// Link is a simulated WAN path between two sides, A and B, in user space
// (kernel netem is not available on every test machine). Traffic flows
// through relays that the link owns ([Link.Relay]): a relay listens on
// loopback on A's side and forwards to a target on B's side. What A sends
// takes the forward direction (A→B) and the answers the reverse one (B→A);
// each direction has its own [Shape] and can be partitioned on its own.
//
// A *Link is a view of the path from one side: [Link.Reverse] is the same
// path seen from B, and [Federation.Link](a, b) and (b, a) are the two views
// of the link between clusters a and b. All methods are safe for concurrent
// use and take effect at once, for traffic in flight too.
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

// NewLink returns a perfect link (no delay, no loss, no partition) whose
// random sources are seeded with seed. Close it to stop its relays.
func NewLink(seed uint64) *Link {
	return newLink(seed, 0, "A", "B")
}

// newLink makes a link whose directions draw from PCG streams 2n and 2n+1 of
// seed.
func newLink(seed, n uint64, a, b string) *Link {
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
//	link.Set(testenv.Latency(30*time.Millisecond), testenv.Loss(0.01))
//	link.Set(testenv.Perfect()) // back to no impairment
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

// Heal ends a partition in both directions.
func (l *Link) Heal() {
	l.core.dirs[l.fwd].heal()
	l.core.dirs[l.rev].heal()
}

// Relay starts a relay for network "tcp" or "udp" that listens on a free
// loopback port on this view's first side and forwards to target on its
// second side, and returns the address to use instead of target. It lives
// until the link is closed.
//
// A UDP relay keeps one upstream socket per client address, so the target
// sees each client as a distinct peer and its answers go back to the right
// client (QUIC works through it).
func (l *Link) Relay(network, target string) (string, error) {
	var r relay
	var err error
	switch network {
	case "tcp":
		ln, lerr := net.Listen("tcp", "127.0.0.1:0")
		if lerr != nil {
			return "", fmt.Errorf("testenv: relay: %w", lerr)
		}
		d := net.Dialer{}
		r = l.startTCPRelay(ln, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", target)
		})
	case "udp":
		raddr, rerr := net.ResolveUDPAddr("udp", target)
		if rerr != nil {
			return "", fmt.Errorf("testenv: relay target: %w", rerr)
		}
		pc, lerr := net.ListenPacket("udp", "127.0.0.1:0")
		if lerr != nil {
			return "", fmt.Errorf("testenv: relay: %w", lerr)
		}
		r = l.startUDPRelay(pc, raddr, func() (net.PacketConn, error) {
			return net.ListenPacket("udp", "127.0.0.1:0")
		})
	default:
		return "", fmt.Errorf("testenv: relay network %q: must be tcp or udp", network)
	}
	if err = l.core.add(r); err != nil {
		return "", err
	}
	return r.Addr().String(), nil
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
