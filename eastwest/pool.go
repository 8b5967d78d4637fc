package eastwest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// QUIC application error codes the gateway closes connections with.
const (
	closeNormal    quic.ApplicationErrorCode = 0
	closeDead      quic.ApplicationErrorCode = 1 // probes unanswered
	closeWithdrawn quic.ApplicationErrorCode = 2 // trust domain withdrawn
	closeRemoved   quic.ApplicationErrorCode = 3 // no longer in the config
	closeLimit     quic.ApplicationErrorCode = 4 // too many connections
)

// errNoGateway: no gateway of the cluster is up.
var errNoGateway = errors.New("eastwest: no gateway of the cluster answers")

// peer is one remote gateway and the pooled QUIC connection to it. Its
// goroutine dials (with backoff), probes, and redials; callers take the
// current connection with conn.
type peer struct {
	g       *Gateway
	addr    string
	cluster federation.ClusterName
	td      spiffeid.TrustDomain
	cancel  context.CancelFunc
	done    chan struct{}

	up   atomic.Bool
	mu   sync.Mutex
	qc   *quic.Conn
	last error
}

func (p *peer) conn() *quic.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.up.Load() {
		return nil
	}
	return p.qc
}

// run keeps a connection to the peer until ctx ends.
func (p *peer) run(ctx context.Context) {
	defer close(p.done)
	cfg := &p.g.cfg
	backoff := cfg.ReconnectMin
	for ctx.Err() == nil {
		qc, err := p.dial(ctx)
		if err != nil {
			p.setDown(nil, err)
			wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, cfg.ReconnectMax)
			continue
		}
		backoff = cfg.ReconnectMin
		p.mu.Lock()
		p.qc, p.last = qc, nil
		p.mu.Unlock()
		p.up.Store(true)
		p.g.m.gateways.WithLabelValues(p.cluster.String(), p.addr).Set(1)
		p.g.log.Info("remote gateway up", "cluster", p.cluster, "address", p.addr)
		reason := p.probeLoop(ctx, qc)
		p.setDown(qc, reason)
		_ = qc.CloseWithError(closeDead, reason.Error())
	}
}

func (p *peer) setDown(qc *quic.Conn, err error) {
	was := p.up.Swap(false)
	p.mu.Lock()
	if qc == nil || p.qc == qc {
		p.qc = nil
	}
	p.last = err
	p.mu.Unlock()
	p.g.m.gateways.WithLabelValues(p.cluster.String(), p.addr).Set(0)
	if was {
		p.g.log.Warn("remote gateway down", "cluster", p.cluster, "address", p.addr, "err", err)
	}
}

func (p *peer) dial(ctx context.Context) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", p.addr)
	if err != nil {
		return nil, err
	}
	tc := trust.ClientTLS(p.g.svids, p.g.bundles, trust.AuthorizeID(trust.GatewayID(p.td)))
	tc.NextProtos = []string{gatewayv1.ALPN}
	dctx, cancel := context.WithTimeout(ctx, p.g.cfg.ConnectTimeout)
	defer cancel()
	return p.g.transport.Dial(dctx, ua, tc, p.g.quicConfig())
}

// probeLoop probes the connection every ProbeInterval until ProbeFailures
// probes in a row fail, the connection closes, or ctx ends; it returns
// why it stopped.
func (p *peer) probeLoop(ctx context.Context, qc *quic.Conn) error {
	cfg := &p.g.cfg
	t := time.NewTicker(cfg.ProbeInterval)
	defer t.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-qc.Context().Done():
			return fmt.Errorf("connection closed: %w", context.Cause(qc.Context()))
		case <-t.C:
		}
		err := p.probe(ctx, qc)
		if err == nil {
			fails = 0
			p.g.m.probes.WithLabelValues(p.cluster.String(), "ok").Inc()
			continue
		}
		p.g.m.probes.WithLabelValues(p.cluster.String(), "fail").Inc()
		if fails++; fails >= cfg.ProbeFailures {
			return fmt.Errorf("%d probes in a row failed: %w", fails, err)
		}
	}
}

// probe opens a probe stream and waits for its status.
func (p *peer) probe(ctx context.Context, qc *quic.Conn) error {
	pctx, cancel := context.WithTimeout(ctx, p.g.cfg.ProbeTimeout)
	defer cancel()
	s, err := qc.OpenStreamSync(pctx)
	if err != nil {
		return err
	}
	defer s.CancelRead(0)
	deadline, _ := pctx.Deadline()
	_ = s.SetDeadline(deadline)
	if _, err := s.Write(p.g.probeHeader); err != nil {
		return err
	}
	_ = s.Close()
	st, err := ReadStatus(s)
	if err != nil {
		return err
	}
	if st.Code != CodeOK {
		return st
	}
	return nil
}

// pool holds the peers of every remote cluster.
type pool struct {
	g  *Gateway
	mu sync.Mutex
	// by cluster, then address
	peers map[federation.ClusterName]map[string]*peer
	rr    atomic.Uint64
}

// reconcile makes the pool hold exactly the gateways of clusters.
func (pl *pool) reconcile(ctx context.Context, clusters map[federation.ClusterName][]string, tds map[federation.ClusterName]spiffeid.TrustDomain) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for name, ps := range pl.peers {
		want := clusters[name]
		for addr, p := range ps {
			if !contains(want, addr) || tds[name] != p.td {
				p.cancel()
				if qc := p.conn(); qc != nil {
					_ = qc.CloseWithError(closeRemoved, "gateway no longer in the config")
				}
				delete(ps, addr)
			}
		}
		if len(ps) == 0 {
			delete(pl.peers, name)
		}
	}
	for name, addrs := range clusters {
		ps := pl.peers[name]
		if ps == nil {
			ps = map[string]*peer{}
			pl.peers[name] = ps
		}
		for _, addr := range addrs {
			if _, ok := ps[addr]; ok {
				continue
			}
			pctx, cancel := context.WithCancel(ctx)
			p := &peer{g: pl.g, addr: addr, cluster: name, td: tds[name], cancel: cancel, done: make(chan struct{})}
			ps[addr] = p
			go p.run(pctx)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// up returns the cluster's gateways that answer probes, rotated so that
// successive calls start at different ones.
func (pl *pool) up(cluster federation.ClusterName) []*peer {
	pl.mu.Lock()
	ps := pl.peers[cluster]
	out := make([]*peer, 0, len(ps))
	for _, p := range ps {
		if p.up.Load() {
			out = append(out, p)
		}
	}
	pl.mu.Unlock()
	if n := len(out); n > 1 {
		k := int(pl.rr.Add(1) % uint64(n))
		out = append(out[k:], out[:k]...)
	}
	return out
}

// anyUp reports whether a gateway of the cluster answers probes.
func (pl *pool) anyUp(cluster federation.ClusterName) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, p := range pl.peers[cluster] {
		if p.up.Load() {
			return true
		}
	}
	return false
}

// counts returns how many remote gateways there are and how many are up.
func (pl *pool) counts() (total, up int) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, ps := range pl.peers {
		for _, p := range ps {
			total++
			if p.up.Load() {
				up++
			}
		}
	}
	return total, up
}

// stop ends every peer and waits for them.
func (pl *pool) stop() {
	pl.mu.Lock()
	var all []*peer
	for _, ps := range pl.peers {
		for _, p := range ps {
			p.cancel()
			all = append(all, p)
		}
	}
	pl.peers = map[federation.ClusterName]map[string]*peer{}
	pl.mu.Unlock()
	for _, p := range all {
		<-p.done
		p.mu.Lock()
		if p.qc != nil {
			_ = p.qc.CloseWithError(closeNormal, "gateway shutting down")
		}
		p.mu.Unlock()
	}
}
