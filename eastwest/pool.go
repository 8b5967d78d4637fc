package eastwest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
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

	up       atomic.Bool
	draining atomic.Bool // it answers probes as draining: keep its connection, send it nothing new
	nonce    atomic.Uint64
	mu       sync.Mutex
	qc       *quic.Conn
	last     error
	// sent and lost count the packets of the peer's closed connections,
	// so its counters add up across reconnections.
	sent, lost uint64
}

// selectable: it answers probes and is not draining.
func (p *peer) selectable() bool { return p.up.Load() && !p.draining.Load() }

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
		// A gateway that answers a new handshake is back: its cluster's
		// ejection for the old failures ends now rather than after a
		// growing ejection time.
		p.g.clusterOut.forgive(p.cluster)
		p.g.m.gateways.WithLabelValues(p.cluster.String(), p.addr).Set(1)
		p.g.log.Info("remote gateway up", "cluster", p.cluster, "address", p.addr)
		reason := p.probeLoop(ctx, qc)
		p.setDown(qc, reason)
		_ = qc.CloseWithError(closeDead, reason.Error())
	}
}

// packets returns the packets sent to the peer and declared lost, over
// all its connections so far.
func (p *peer) packets() (sent, lost uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sent, lost = p.sent, p.lost
	if p.qc != nil {
		st := p.qc.ConnectionStats()
		sent, lost = sent+st.PacketsSent, lost+st.PacketsLost
	}
	return sent, lost
}

func (p *peer) setDown(qc *quic.Conn, err error) {
	was := p.up.Swap(false)
	p.mu.Lock()
	if p.qc != nil && (qc == nil || p.qc == qc) {
		st := p.qc.ConnectionStats()
		p.sent, p.lost = p.sent+st.PacketsSent, p.lost+st.PacketsLost
		p.qc = nil
	}
	p.last = err
	p.mu.Unlock()
	p.g.m.gateways.WithLabelValues(p.cluster.String(), p.addr).Set(0)
	if was {
		p.g.log.Warn("remote gateway down", "cluster", p.cluster, "address", p.addr, "err", err)
		p.g.noteEvent()
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
		draining, err := p.probe(ctx, qc)
		if err == nil {
			fails = 0
			if was := p.draining.Swap(draining); was != draining {
				p.g.log.Info("remote gateway draining", "cluster", p.cluster, "address", p.addr, "draining", draining)
			}
			p.g.m.probes.WithLabelValues(p.cluster.String(), "ok").Inc()
			continue
		}
		p.g.m.probes.WithLabelValues(p.cluster.String(), "fail").Inc()
		if fails++; fails >= cfg.ProbeFailures {
			return fmt.Errorf("%d probes in a row failed: %w", fails, err)
		}
	}
}

// Probes are QUIC datagrams, not streams: they need no stream credit (a
// connection whose streams are all in use is busy, not dead) and leave no
// state behind. A probe is [probeRequest][8-byte nonce]; the answer echoes
// the nonce after probeServing or probeDraining. Each probe is sent twice,
// so one lost datagram does not fail it.
const (
	probeRequest  byte = 1
	probeServing  byte = 2
	probeDraining byte = 3
	probeLen           = 9
)

// errProbeTimeout: no answer within ProbeTimeout.
var errProbeTimeout = errors.New("eastwest: probe unanswered")

// probe sends a probe datagram and waits for its answer. It reports
// whether the peer is draining.
func (p *peer) probe(ctx context.Context, qc *quic.Conn) (draining bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, p.g.cfg.ProbeTimeout)
	defer cancel()
	var msg [probeLen]byte
	msg[0] = probeRequest
	binary.BigEndian.PutUint64(msg[1:], p.nonce.Add(1))
	for range 2 {
		if err := qc.SendDatagram(msg[:]); err != nil {
			return false, err
		}
	}
	for {
		d, err := qc.ReceiveDatagram(pctx)
		if err != nil {
			if pctx.Err() != nil && ctx.Err() == nil {
				return false, errProbeTimeout
			}
			return false, err
		}
		if len(d) != probeLen || !bytes.Equal(d[1:], msg[1:]) {
			continue // an answer to an older probe, or its duplicate
		}
		switch d[0] {
		case probeServing:
			return false, nil
		case probeDraining:
			return true, nil
		}
	}
}

// answerProbes answers the probe datagrams of a remote gateway's
// connection until it closes.
func (g *Gateway) answerProbes(ctx context.Context, qc *quic.Conn) {
	for {
		d, err := qc.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		if len(d) != probeLen || d[0] != probeRequest {
			continue
		}
		d[0] = probeServing
		if g.draining.Load() {
			d[0] = probeDraining
		}
		_ = qc.SendDatagram(d)
	}
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
			if !slices.Contains(want, addr) || tds[name] != p.td {
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

// up returns the cluster's gateways that answer probes, rotated so that
// successive calls start at different ones.
func (pl *pool) up(cluster federation.ClusterName) []*peer {
	pl.mu.Lock()
	ps := pl.peers[cluster]
	out := make([]*peer, 0, len(ps))
	for _, p := range ps {
		if p.selectable() {
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

// all returns every peer.
func (pl *pool) all() []*peer {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var out []*peer
	for _, ps := range pl.peers {
		for _, p := range ps {
			out = append(out, p)
		}
	}
	return out
}

// anyUp reports whether a gateway of the cluster answers probes.
func (pl *pool) anyUp(cluster federation.ClusterName) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, p := range pl.peers[cluster] {
		if p.selectable() {
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
