package eastwest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
)

// serveIngress accepts connections from remote gateways until ctx ends.
func (g *Gateway) serveIngress(ctx context.Context, ln *quic.Listener) {
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go g.handleConn(ctx, qc)
	}
}

// handleConn serves one remote gateway's connection.
func (g *Gateway) handleConn(ctx context.Context, qc *quic.Conn) {
	certs := qc.ConnectionState().TLS.PeerCertificates
	id, err := x509svid.IDFromCert(certs[0])
	t := g.table.Load()
	src, ok := t.clusterByTD[id.TrustDomain()]
	if err != nil || !ok {
		// The handshake's authorizer admitted it against an older table.
		_ = qc.CloseWithError(closeRemoved, "not a member cluster's gateway")
		return
	}
	g.ingressMu.Lock()
	if g.connsByCl[src] >= g.cfg.MaxConnsPerCluster {
		g.ingressMu.Unlock()
		_ = qc.CloseWithError(closeLimit, fmt.Sprintf("at most %d connections per source cluster", g.cfg.MaxConnsPerCluster))
		return
	}
	g.connsByCl[src]++
	g.ingressMu.Unlock()
	defer func() {
		g.ingressMu.Lock()
		g.connsByCl[src]--
		g.ingressMu.Unlock()
	}()
	untrack := g.guard.TrackPeer(certs, func() { _ = qc.CloseWithError(closeWithdrawn, "trust domain withdrawn") })
	defer untrack()
	go g.answerProbes(ctx, qc)
	for {
		s, err := qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		// Counted from acceptance, before its header arrives, so a peer
		// cannot hold more than its share with streams that never speak.
		g.ingressMu.Lock()
		over := g.streamsByCl[src] >= g.cfg.MaxStreamsPerCluster
		if !over {
			g.streamsByCl[src]++
		}
		g.ingressMu.Unlock()
		if over {
			g.m.requests.WithLabelValues("unknown", src.String(), "ingress", CodeOverloaded.String()).Inc()
			refuse(s, CodeOverloaded, fmt.Sprintf("at most %d streams per source cluster", g.cfg.MaxStreamsPerCluster))
			continue
		}
		go func() {
			defer func() {
				g.ingressMu.Lock()
				g.streamsByCl[src]--
				g.ingressMu.Unlock()
			}()
			g.handleStream(ctx, qc, src, s)
		}()
	}
}

// refuse answers a status and ends the stream.
func refuse(s *quic.Stream, code Code, msg string) {
	_, _ = s.Write(AppendStatus(nil, code, msg))
	_ = s.Close()
	s.CancelRead(0)
}

// handleStream serves one stream: header, checks, an endpoint, the
// status, then the pipe.
func (g *Gateway) handleStream(ctx context.Context, qc *quic.Conn, src federation.ClusterName, s *quic.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(g.cfg.HeaderTimeout))
	var buf [512]byte
	h, err := ReadHeader(s, buf[:])
	if err != nil {
		refuse(s, CodeBadRequest, err.Error())
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	if h.Kind == KindProbe {
		if g.draining.Load() {
			refuse(s, CodeDraining, "")
			return
		}
		refuse(s, CodeOK, "") // an OK answer ends a probe
		return
	}
	result := "ok"
	svcLabel := "unknown" // a metric label only for what this cluster exports
	defer func() { g.m.requests.WithLabelValues(svcLabel, src.String(), "ingress", result).Inc() }()
	if g.draining.Load() {
		result = CodeDraining.String()
		refuse(s, CodeDraining, "the gateway is draining")
		return
	}
	if h.Source != src.String() {
		result = CodeForbidden.String()
		refuse(s, CodeForbidden, fmt.Sprintf("source %q is not the peer's cluster %q", h.Source, src))
		return
	}
	key, err := federation.ParseServiceKey(h.Service)
	t := g.table.Load()
	ls := t.state.Local[key]
	if err != nil || ls == nil {
		result = CodeUnknownService.String()
		refuse(s, CodeUnknownService, fmt.Sprintf("%s is not exported by this cluster", h.Service))
		return
	}
	svcLabel = key.String()
	sp, ok := ls.Port(h.Port)
	if !ok {
		result = CodeUnknownService.String()
		refuse(s, CodeUnknownService, fmt.Sprintf("%s has no port %d", h.Service, h.Port))
		return
	}
	who := policy.Source{Cluster: src}
	if rc := t.state.Clusters[src]; rc != nil {
		who.TrustDomain = rc.TrustDomain
		// The caller's gateway names its workload; it may name only
		// workloads of its own trust domain.
		who.ServiceAccount = serviceAccountOf(h.Identity, rc.TrustDomain)
	}
	if pol := t.policyOf(key); pol != nil {
		if ok, why := pol.c.Authorize(who); !ok {
			result = CodeForbidden.String()
			refuse(s, CodeForbidden, fmt.Sprintf("%s: %s", h.Service, why))
			return
		}
	}
	eps := readyLocal(ls, sp.Name, h.Subset)
	conn, ep, err := g.dialEndpoint(ctx, eps)
	if err != nil {
		result = CodeNoHealthyEndpoint.String()
		refuse(s, CodeNoHealthyEndpoint, err.Error())
		return
	}
	if _, err := s.Write(AppendStatus(nil, CodeOK, "")); err != nil {
		_ = conn.Close()
		s.CancelRead(0)
		result = "reset"
		return
	}
	g.inflight.Add(1)
	g.active.Add(1)
	active := g.m.active.WithLabelValues(svcLabel, src.String(), "ingress")
	active.Inc()
	sc := &streamConn{Stream: s, local: qc.LocalAddr(), remote: qc.RemoteAddr()}
	// A policy applied later re-decides the stream: one its authorization
	// now refuses is cut (the caller's gateway then opens a new stream,
	// which is refused with CodeForbidden).
	live := &ingressStream{service: key, who: who, cut: func() {
		s.CancelRead(quic.StreamErrorCode(CodeForbidden))
		s.CancelWrite(quic.StreamErrorCode(CodeForbidden))
		_ = conn.Close()
	}}
	g.trackIngress(live, true)
	in, out := pipe(ctx, sc, tcpDuplex{conn}, g.cfg.IdleTimeout)
	g.trackIngress(live, false)
	active.Dec()
	g.active.Add(-1)
	g.inflight.Done()
	g.m.bytes.WithLabelValues(svcLabel, src.String(), "ingress", "sent").Add(float64(in))
	g.m.bytes.WithLabelValues(svcLabel, src.String(), "ingress", "received").Add(float64(out))
	if g.cfg.AccessLog != nil {
		g.cfg.AccessLog.Info("ingress", "service", h.Service, "port", h.Port, "source", src, "identity", h.Identity,
			"trace", fmt.Sprintf("%x", h.TraceID), "endpoint", ep, "sent", in, "received", out)
	}
}

// dialEndpoint dials a ready endpoint, starting at a random one and
// skipping ejected ones unless nothing else is left.
func (g *Gateway) dialEndpoint(ctx context.Context, eps []netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	if len(eps) == 0 {
		return nil, netip.AddrPort{}, errors.New("no ready endpoint")
	}
	now := time.Now()
	start := rand.IntN(len(eps))
	order := make([]netip.AddrPort, 0, len(eps))
	var ejected []netip.AddrPort
	for i := range eps {
		e := eps[(start+i)%len(eps)]
		if g.endpointOut.ejected(e, now) {
			ejected = append(ejected, e)
		} else {
			order = append(order, e)
		}
	}
	order = append(order, ejected...)
	var errs []error
	d := net.Dialer{Timeout: g.cfg.ConnectTimeout}
	for _, e := range order {
		c, err := d.DialContext(ctx, "tcp", g.mapEndpoint(e).String())
		if err == nil {
			g.endpointOut.success(e, time.Now())
			return c, e, nil
		}
		g.endpointOut.failure(e, time.Now())
		errs = append(errs, err)
	}
	return nil, netip.AddrPort{}, fmt.Errorf("no endpoint of %d accepted a connection: %w", len(eps), errors.Join(errs...))
}

// serviceAccountOf returns "namespace/name" of a workload SPIFFE ID of the
// Kubernetes form in trust domain td (spiffe://<td>/ns/<namespace>/sa/<name>),
// "" otherwise (another trust domain included).
func serviceAccountOf(id string, td spiffeid.TrustDomain) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok || td.IsZero() {
		return ""
	}
	domain, path, ok := strings.Cut(rest, "/")
	if !ok || domain != td.Name() {
		return ""
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return ""
	}
	return parts[1] + "/" + parts[3]
}

// ingressStream is an ingress stream being piped, as authorization sees it.
type ingressStream struct {
	service federation.ServiceKey
	who     policy.Source
	cut     func()
}

// trackIngress adds (on) or removes a piped ingress stream.
func (g *Gateway) trackIngress(s *ingressStream, on bool) {
	g.ingressMu.Lock()
	defer g.ingressMu.Unlock()
	if g.liveIngress == nil {
		g.liveIngress = map[*ingressStream]struct{}{}
	}
	if on {
		g.liveIngress[s] = struct{}{}
	} else {
		delete(g.liveIngress, s)
	}
}

// reauthorize cuts the piped ingress streams that t's policies no longer
// authorize: a deny applies to connections already open, not only to new
// ones.
func (g *Gateway) reauthorize(t *table) {
	g.ingressMu.Lock()
	var cut []*ingressStream
	for s := range g.liveIngress {
		if pol := t.policyOf(s.service); pol != nil {
			if ok, _ := pol.c.Authorize(s.who); !ok {
				cut = append(cut, s)
				delete(g.liveIngress, s)
			}
		}
	}
	g.ingressMu.Unlock()
	for _, s := range cut {
		g.m.requests.WithLabelValues(s.service.String(), s.who.Cluster.String(), "ingress", "cut_by_policy").Inc()
		s.cut()
	}
}
