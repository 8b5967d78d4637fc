package hub

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"
)

// maxLimitedPeers bounds the peers ipLimiter tracks at once.
const maxLimitedPeers = 4096

// ipLimiter is a token bucket per peer IP for unauthenticated calls (Join).
// It tracks at most maxLimitedPeers peers: when full it first forgets the
// peers whose buckets have refilled (forgetting them changes nothing), then
// any one.
type ipLimiter struct {
	limit rate.Limit
	burst int
	// full is how long an idle bucket takes to refill completely.
	full time.Duration

	mu    sync.Mutex
	peers map[string]*peerBucket
}

type peerBucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{
		limit: rate.Limit(perSecond), burst: burst,
		full:  time.Duration(float64(burst) / perSecond * float64(time.Second)),
		peers: map[string]*peerBucket{},
	}
}

// allow takes a token from ip's bucket, reporting whether there was one.
func (l *ipLimiter) allow(ip string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.peers[ip]
	if !ok {
		if len(l.peers) >= maxLimitedPeers {
			l.evict(now)
		}
		b = &peerBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.peers[ip] = b
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

func (l *ipLimiter) evict(now time.Time) {
	for ip, b := range l.peers {
		if now.Sub(b.last) >= l.full {
			delete(l.peers, ip)
		}
	}
	for ip := range l.peers {
		if len(l.peers) < maxLimitedPeers {
			return
		}
		delete(l.peers, ip)
	}
}

func (l *ipLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.peers)
}

// peerIP is the caller's IP address, or "" if unknown.
func peerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// readyCacheTTL is how long a /readyz answer is reused: readiness costs a
// read index (a quorum round on the leader), which probes must not drive.
const readyCacheTTL = time.Second

// readyCache remembers the last readiness check for readyCacheTTL. One
// check runs at a time; callers that arrive meanwhile wait for it and share
// its answer. The zero value is ready to use.
type readyCache struct {
	mu  sync.Mutex
	at  time.Time
	err error
	ok  bool // at and err hold an answer
	// flight is closed when the running check ends; nil when none runs.
	flight chan struct{}
}

// get returns the cached answer, or runs check (at most one at a time).
func (c *readyCache) get(ctx context.Context, check func(context.Context) error) error {
	for {
		c.mu.Lock()
		if c.ok && time.Since(c.at) < readyCacheTTL {
			err := c.err
			c.mu.Unlock()
			return err
		}
		if f := c.flight; f != nil {
			c.mu.Unlock()
			select {
			case <-f:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f := make(chan struct{})
		c.flight = f
		c.mu.Unlock()
		err := check(context.WithoutCancel(ctx)) // a client that left must not poison the answer
		c.mu.Lock()
		c.at, c.err, c.ok, c.flight = time.Now(), err, true, nil
		c.mu.Unlock()
		close(f)
		return err
	}
}
