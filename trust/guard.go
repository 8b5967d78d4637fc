package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ConnGuard closes established connections whose peer's trust domain was
// withdrawn from a BundleSet: the handshake checks a peer once, and a
// gateway's connections live for hours. Only withdrawal closes a
// connection. A root retired by a rotation does not, nor does a peer
// certificate's expiry: a rotation must not drop connections, and every
// certificate signed by a retired root has expired by then anyway, so new
// handshakes already refuse it.
type ConnGuard struct {
	bundles *BundleSet

	mu     sync.Mutex
	conns  map[*guarded]spiffeid.TrustDomain
	closed uint64
}

// guarded is one tracked connection: how to close it.
type guarded struct{ close func() }

// NewConnGuard returns a guard over bundles; run it with Run.
func NewConnGuard(bundles *BundleSet) *ConnGuard {
	return &ConnGuard{bundles: bundles, conns: map[*guarded]spiffeid.TrustDomain{}}
}

// Track guards c, whose handshake must be complete, and returns a function
// that stops guarding it (call it when the connection is closed). A
// connection whose peer presented no SPIFFE ID is not tracked.
func (g *ConnGuard) Track(c *tls.Conn) (untrack func()) {
	return g.TrackPeer(c.ConnectionState().PeerCertificates, func() { _ = c.Close() })
}

// TrackPeer guards any connection, such as a QUIC connection, by its
// peer's certificate chain as the handshake presented it (leaf first):
// closeConn is called, once, if the peer's trust domain is withdrawn. It
// returns a function that stops guarding it. A peer without a SPIFFE ID is
// not tracked.
func (g *ConnGuard) TrackPeer(certs []*x509.Certificate, closeConn func()) (untrack func()) {
	if len(certs) == 0 {
		return func() {}
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return func() {}
	}
	c := &guarded{close: closeConn}
	g.mu.Lock()
	g.conns[c] = id.TrustDomain()
	g.mu.Unlock()
	if !g.bundles.Has(id.TrustDomain()) {
		// Withdrawn between the handshake and now.
		g.Check()
	}
	return func() {
		g.mu.Lock()
		delete(g.conns, c)
		g.mu.Unlock()
	}
}

// Check closes every tracked connection whose peer's trust domain is not
// in the bundle set, and returns how many it closed.
func (g *ConnGuard) Check() int {
	var doomed []*guarded
	g.mu.Lock()
	for c, td := range g.conns {
		if !g.bundles.Has(td) {
			doomed = append(doomed, c)
			delete(g.conns, c)
		}
	}
	g.closed += uint64(len(doomed))
	g.mu.Unlock()
	for _, c := range doomed {
		c.close()
	}
	return len(doomed)
}

// Closed returns how many connections the guard has closed.
func (g *ConnGuard) Closed() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Tracked returns how many connections are guarded.
func (g *ConnGuard) Tracked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Run checks after every change of the bundle set until ctx is done.
func (g *ConnGuard) Run(ctx context.Context) error {
	ch, stop := g.bundles.Watch()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
			g.Check()
		}
	}
}
