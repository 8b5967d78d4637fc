package eastwest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
)

// egressKey is what one egress listener serves.
type egressKey struct {
	service federation.ServiceKey
	port    gatewayclient.ServicePort
}

// egressListener is one egress port's listener.
type egressListener struct {
	key    egressKey
	ln     net.Listener
	http   *http.Server  // HTTP/2 (h2c, gRPC) of an HTTP port; nil for a TCP port
	h2     *chanListener // what http serves
	conns  *connSet      // HTTP/1 client connections
	cancel context.CancelFunc
	done   chan struct{}
}

// egressSet holds the egress listeners, one per egress port.
type egressSet struct {
	g  *Gateway
	mu sync.Mutex
	// ls are keyed by the address they listen on: the egress port on
	// Config.EgressBind, and an import's ClusterSetIP at the service port.
	ls map[netip.AddrPort]*egressListener
	// transports pool HTTP streams per destination and service port.
	tmu        sync.Mutex
	transports map[transportKey]*http.Transport
	// pool keeps the HTTP/1 fast path's upstream connections.
	pool upPool
}

type transportKey struct {
	t    target
	svc  federation.ServiceKey
	port uint16
	h2   bool
}

func newEgressSet(g *Gateway) *egressSet {
	return &egressSet{g: g, ls: map[netip.AddrPort]*egressListener{}, transports: map[transportKey]*http.Transport{},
		pool: upPool{idle: map[transportKey][]*upConn{}}}
}

// reconcile makes the listeners match the table's imports. It returns the
// ports it could not listen on; the others serve.
func (e *egressSet) reconcile(ctx context.Context, t *table) error {
	want := map[netip.AddrPort]egressKey{}
	for key, im := range t.state.Imports {
		for _, p := range im.Ports {
			if fedv1.Transport(p.Protocol) != "TCP" {
				continue
			}
			k := egressKey{service: key, port: p.ServicePort}
			if p.Egress != 0 {
				want[netip.AddrPortFrom(e.g.cfg.EgressBind, p.Egress)] = k
			}
			if im.ClusterSetIP.IsValid() {
				want[netip.AddrPortFrom(im.ClusterSetIP, p.Port)] = k
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for port, l := range e.ls {
		if k, ok := want[port]; !ok || k != l.key {
			l.close()
			delete(e.ls, port)
		}
	}
	var errs []error
	for port, k := range want {
		if _, ok := e.ls[port]; ok {
			continue
		}
		l, err := e.listen(ctx, port, k)
		if err != nil {
			errs = append(errs, fmt.Errorf("egress %s for %s port %d: %w", port, k.service, k.port.Port, err))
			continue
		}
		e.ls[port] = l
	}
	return errors.Join(errs...)
}

func (e *egressSet) listen(ctx context.Context, addr netip.AddrPort, k egressKey) (*egressListener, error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	l := &egressListener{key: k, ln: ln, cancel: cancel, done: make(chan struct{})}
	if k.port.IsHTTP() {
		l.http = e.httpServer(lctx, k)
		l.h2 = newChanListener(ln.Addr())
		l.conns = &connSet{idle: map[net.Conn]bool{}}
		go func() { _ = l.http.Serve(l.h2) }()
		go func() {
			defer close(l.done)
			e.serveHTTPPort(lctx, ln, k, l.h2, l.conns)
		}()
	} else {
		go func() {
			defer close(l.done)
			e.serveTCP(lctx, ln, k)
		}()
	}
	return l, nil
}

func (l *egressListener) close() {
	l.cancel()
	_ = l.ln.Close()
	if l.http != nil {
		_ = l.h2.Close()
		_ = l.http.Close()
		l.conns.drain()
	}
}

// forget drops the pooled upstreams and HTTP/2 transports whose key keep
// refuses.
func (e *egressSet) forget(keep func(transportKey) bool) {
	e.tmu.Lock()
	for k, t := range e.transports {
		if !keep(k) {
			t.CloseIdleConnections()
			delete(e.transports, k)
		}
	}
	e.tmu.Unlock()
	e.pool.mu.Lock()
	for k, l := range e.pool.idle {
		if !keep(k) {
			for _, u := range l {
				_ = u.c.Close()
			}
			delete(e.pool.idle, k)
		}
	}
	e.pool.mu.Unlock()
}

// closeListeners stops accepting (drain); connections in flight go on.
func (e *egressSet) closeListeners() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.ls {
		_ = l.ln.Close()
		if l.http != nil {
			l.conns.drain()
			l.http.SetKeepAlivesEnabled(false)
			go func() { _ = l.http.Shutdown(context.Background()) }()
		}
	}
}

// shutdown closes everything.
func (e *egressSet) shutdown() {
	e.mu.Lock()
	for port, l := range e.ls {
		l.close()
		<-l.done
		delete(e.ls, port)
	}
	e.mu.Unlock()
	e.tmu.Lock()
	for _, t := range e.transports {
		t.CloseIdleConnections()
	}
	e.tmu.Unlock()
	e.pool.closeAll()
}

// serveTCP handles each connection of a TCP egress port.
func (e *egressSet) serveTCP(ctx context.Context, ln net.Listener, k egressKey) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		e.g.inflight.Add(1)
		go func() {
			defer e.g.inflight.Done()
			e.handleTCP(ctx, c, k)
		}()
	}
}

func (e *egressSet) handleTCP(ctx context.Context, c net.Conn, k egressKey) {
	g := e.g
	svc := k.service.String()
	start := time.Now()
	up, t, release, err := g.connect(ctx, k, g.table.Load().identityOf(c.RemoteAddr()))
	if err != nil {
		result := "unavailable"
		if errors.Is(err, errOverflow) {
			result = "overflow"
		} else if _, ok := forbidden(err); ok {
			result = "403"
		}
		g.m.requests.WithLabelValues(svc, "none", "egress", result).Inc()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset: the client sees the failure at once
		}
		_ = c.Close()
		g.log.Debug("egress: no destination", "service", svc, "err", err)
		return
	}
	dst := t.label()
	g.m.latency.WithLabelValues(svc, dst, "egress").Observe(time.Since(start).Seconds())
	g.active.Add(1)
	active := g.m.active.WithLabelValues(svc, dst, "egress")
	active.Inc()
	sent, recv := pipe(ctx, tcpDuplex{c}, up, g.cfg.IdleTimeout)
	release()
	active.Dec()
	g.active.Add(-1)
	g.m.requests.WithLabelValues(svc, dst, "egress", "ok").Inc()
	g.m.bytes.WithLabelValues(svc, dst, "egress", "sent").Add(float64(sent))
	g.m.bytes.WithLabelValues(svc, dst, "egress", "received").Add(float64(recv))
	if g.cfg.AccessLog != nil {
		g.cfg.AccessLog.Info("egress", "service", svc, "port", k.port.Port, "client", c.RemoteAddr().String(), "destination", dst,
			"sent", sent, "received", recv, "duration", time.Since(start))
	}
}

func (t target) label() string {
	if t.local {
		return "local"
	}
	return t.cluster.String()
}

// connect opens a connection for one egress TCP connection: to the best
// target (under a policy, its first matching TCP route's destination drawn
// by weight, then the route's others), failing over to the next while
// nothing has reached the client. It returns the connection, where it
// goes, and the release of the policy's connection slot it holds.
func (g *Gateway) connect(ctx context.Context, k egressKey, identity string) (duplex, target, func(), error) {
	t := g.table.Load()
	r := t.routes[k.service]
	if r == nil {
		return nil, target{}, nil, fmt.Errorf("eastwest: %s is not imported", k.service)
	}
	var (
		dests []policy.WeightedDestination
		pick  policy.WeightedDestination
		state *serviceState
	)
	if r.pol != nil {
		state = r.pol.state
		if rule := r.pol.c.MatchTCP(int(k.port.Port)); rule != nil {
			dests, pick = rule.WeightedDestinations(), rule.Pick(randFloat())
		}
	}
	release, err := state.acquire(ctx, false)
	if err != nil {
		return nil, target{}, nil, err
	}
	var errs []error
	for _, tg := range withIdentity(r.routeTargets(dests, pick, k.port.Name, g, time.Now(), randFloat), identity) {
		c, err := g.dialTarget(ctx, tg, k)
		if err == nil {
			if r.pol != nil && !tg.local {
				r.pol.clusterResult(r, tg.cluster, true, time.Now())
			}
			return c, tg, release, nil
		}
		if _, ok := forbidden(err); ok {
			release()
			return nil, target{}, nil, err // the service's answer, not the cluster's
		}
		if r.pol != nil && !tg.local {
			r.pol.clusterResult(r, tg.cluster, false, time.Now())
		}
		errs = append(errs, fmt.Errorf("%s: %w", tg.label(), err))
		g.failedOver(k.service.String(), tg.label(), failReason(err))
	}
	release()
	if len(errs) == 0 {
		return nil, target{}, nil, fmt.Errorf("eastwest: %s has no destination", k.service)
	}
	return nil, target{}, nil, errors.Join(errs...)
}

// clusterFault reports whether a failed attempt counts against the
// cluster's gateways in outlier detection: transport failures and an
// overloaded or draining gateway do; answers about one service (unknown
// here, no healthy endpoint, forbidden) do not, since the cluster is
// healthy for its other services.
func clusterFault(err error) bool {
	var st Status
	if errors.As(err, &st) {
		return st.Code == CodeOverloaded || st.Code == CodeBadRequest
	}
	return !errors.Is(err, context.Canceled)
}

func failReason(err error) string {
	var st Status
	switch {
	case errors.As(err, &st):
		return st.Code.String()
	case errors.Is(err, errNoGateway):
		return "no_gateway"
	default:
		return "connect"
	}
}

// dialTarget opens a connection to one target: a local endpoint directly,
// or a stream through one of the cluster's gateways (trying each gateway
// that is up). It feeds outlier detection.
func (g *Gateway) dialTarget(ctx context.Context, tg target, k egressKey) (duplex, error) {
	if sp := g.table.Load().policyOf(k.service); sp != nil {
		if d := sp.c.ConnectionPool().ConnectTimeout; d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	if tg.local {
		// The table may have changed since the target was chosen.
		r := g.table.Load().routes[k.service]
		if r == nil || r.local == nil {
			return nil, fmt.Errorf("eastwest: %s is no longer served here", k.service)
		}
		if err := g.authorizeLocal(g.table.Load(), r.pol, tg.identity); err != nil {
			return nil, err
		}
		c, _, err := g.dialEndpoint(ctx, readyLocal(r.local, k.port.Name, subsetLabels(tg.subset)))
		if err != nil {
			return nil, err
		}
		return tcpDuplex{c}, nil
	}
	peers := g.pool.up(tg.cluster)
	if len(peers) == 0 {
		return nil, errNoGateway
	}
	hdr, err := AppendHeader(nil, &Header{Kind: KindConnect, Service: k.service.String(), Port: k.port.Port,
		Source: g.table.Load().state.Self.Cluster.String(), Subset: subsetLabels(tg.subset), Identity: tg.identity})
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, p := range peers {
		s, err := g.openStream(ctx, p, hdr)
		if err == nil {
			g.clusterOut.success(tg.cluster, time.Now())
			return s, nil
		}
		errs = append(errs, err)
		var st Status
		if errors.As(err, &st) && st.Code != CodeDraining && st.Code != CodeOverloaded {
			break // the cluster's answer, not this gateway's state
		}
	}
	err = errors.Join(errs...)
	if clusterFault(err) && ctx.Err() == nil {
		g.clusterOut.failure(tg.cluster, time.Now())
	}
	return nil, err
}

// openStream opens a stream on a peer's connection, sends the header and
// waits for an OK status.
func (g *Gateway) openStream(ctx context.Context, p *peer, hdr []byte) (*streamConn, error) {
	qc := p.conn()
	if qc == nil {
		return nil, errNoGateway
	}
	octx, cancel := context.WithTimeout(ctx, g.cfg.ConnectTimeout)
	defer cancel()
	s, err := qc.OpenStreamSync(octx)
	if err != nil {
		return nil, err
	}
	deadline, _ := octx.Deadline()
	_ = s.SetDeadline(deadline)
	if _, err := s.Write(hdr); err != nil {
		s.CancelRead(0)
		s.CancelWrite(0)
		return nil, err
	}
	st, err := ReadStatus(s)
	if err != nil {
		s.CancelRead(0)
		s.CancelWrite(0)
		return nil, err
	}
	if st.Code != CodeOK {
		s.CancelRead(0)
		_ = s.Close()
		return nil, st
	}
	_ = s.SetDeadline(time.Time{})
	return &streamConn{Stream: s, qc: qc, local: qc.LocalAddr(), remote: qc.RemoteAddr()}, nil
}

// ---- HTTP ports: per request ----

// httpServer serves an HTTP egress port: HTTP/1.1 and h2c (gRPC).
func (e *egressSet) httpServer(ctx context.Context, k egressKey) *http.Server {
	h2 := isH2(k.port)
	rt := &failoverTransport{e: e, k: k, h2: h2}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Host
			pr.Out.Host = pr.In.Host
		},
		Transport: rt,
		// 0: flushed when the handler ends; streaming responses (unknown
		// length, gRPC, server-sent events) are flushed at once anyway.
		FlushInterval: 0,
		BufferPool:    proxyBuffers{},
		ModifyResponse: func(resp *http.Response) error {
			if rule, _ := resp.Request.Context().Value(ruleKey{}).(*policy.HTTPRule); rule != nil {
				rule.ResponseHeaders().Apply(resp.Header)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			e.g.log.Debug("egress: request failed", "service", k.service, "err", err)
			if st, ok := forbidden(err); ok {
				writeStatus(w, http.StatusForbidden, st.Message)
				return
			}
			if errors.Is(err, context.DeadlineExceeded) {
				writeStatus(w, http.StatusGatewayTimeout, "upstream request timeout")
				return
			}
			writeStatus(w, http.StatusServiceUnavailable, "no cluster could serve "+k.service.String())
		},
	}
	// Requests in flight count for the drain, like the fast path's.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.g.inflight.Add(1)
		defer e.g.inflight.Done()
		route := e.g.table.Load().routes[k.service]
		if route == nil || route.pol == nil {
			rp.ServeHTTP(w, r)
			return
		}
		// The policy's route: fault, request headers, rewrite and
		// timeout here; destinations and retries in the transport, which
		// finds the route in the context.
		ctx := r.Context()
		if rule := route.pol.c.MatchHTTP(r.Method, r.URL.Path, r.Host, r.Header); rule != nil {
			if f := rule.Fault(); f != nil {
				if d, ok := f.Delay(randFloat()); ok {
					tm := time.NewTimer(d)
					select {
					case <-tm.C:
					case <-ctx.Done():
						tm.Stop()
						return
					}
				}
				if code, ok := f.Abort(randFloat()); ok {
					e.g.m.requests.WithLabelValues(k.service.String(), "none", "egress", "fault_abort").Inc()
					writeStatus(w, code, "fault filter abort")
					return
				}
			}
			rule.RequestHeaders().Apply(r.Header)
			if path, authority := rule.Rewrite(r.URL.Path, r.Host); path != r.URL.Path || authority != r.Host {
				r.URL.Path, r.URL.RawPath, r.Host = path, "", authority
			}
			if d := rule.Timeout(); d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			ctx = context.WithValue(ctx, ruleKey{}, rule)
		}
		release, err := route.pol.state.acquire(ctx, true)
		if err != nil {
			e.g.m.requests.WithLabelValues(k.service.String(), "none", "egress", "overflow").Inc()
			w.Header().Set("X-Meshfed-Overflow", "true")
			writeStatus(w, http.StatusServiceUnavailable, "the connection pool of "+k.service.String()+" is full")
			return
		}
		defer release()
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	return srv
}

func isH2(p gatewayclient.ServicePort) bool {
	switch p.Protocol {
	case "HTTP2", "GRPC":
		return true
	}
	return p.AppProtocol == "h2c" || p.AppProtocol == "grpc" || p.AppProtocol == "kubernetes.io/h2c"
}

type proxyBuffers struct{}

func (proxyBuffers) Get() []byte  { return *(bufPool.Get().(*[]byte)) }
func (proxyBuffers) Put(b []byte) { bufPool.Put(&b) }

// failoverTransport sends each request to the best target, failing over
// while nothing reached the client.
type failoverTransport struct {
	e  *egressSet
	k  egressKey
	h2 bool
}

// keepBody is a request body that a transport may close before reading
// (a failed dial) without ending it for the next attempt.
type keepBody struct {
	io.ReadCloser
	read atomic.Bool
}

func (b *keepBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

func (b *keepBody) Close() error {
	if !b.read.Load() {
		return nil
	}
	return b.ReadCloser.Close()
}

// connectError marks a failure to reach a target: nothing was sent.
type connectError struct{ err error }

func (c *connectError) Error() string { return c.err.Error() }
func (c *connectError) Unwrap() error { return c.err }

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
	}
	return false
}

// ruleKey carries a request's policy route (*policy.HTTPRule) from the
// handler to the transport.
type ruleKey struct{}

func (f *failoverTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	g := f.e.g
	svc := f.k.service.String()
	t := g.table.Load()
	r := t.routes[f.k.service]
	if r == nil {
		return nil, fmt.Errorf("eastwest: %s is not imported", svc)
	}
	start := time.Now()
	retriable := idempotent(req)
	maxRetries := g.cfg.HTTPRetries
	var (
		rp    *policy.RetryPolicy
		dests []policy.WeightedDestination
		pick  policy.WeightedDestination
	)
	if rule, _ := req.Context().Value(ruleKey{}).(*policy.HTTPRule); rule != nil {
		dests, pick = rule.WeightedDestinations(), rule.Pick(randFloat())
		if rp = rule.Retries(); rp != nil {
			maxRetries = rp.Attempts()
			// A policy retries any request it can replay.
			retriable = req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
		}
	}
	retries := 0
	var identity string
	if a, err := net.ResolveTCPAddr("tcp", req.RemoteAddr); err == nil {
		identity = t.identityOf(a)
	}
	targets := withIdentity(r.routeTargets(dests, pick, f.k.port.Name, g, start, randFloat), identity)
	if rp != nil && len(targets) > 0 {
		// The retries may revisit the targets, best first.
		for i := 0; len(targets) < maxRetries+1; i++ {
			targets = append(targets, targets[i])
		}
	}
	var lastErr error
	// The transport closes a request's body when its dial fails; nothing
	// was read then, and the next target needs the body whole.
	var body *keepBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &keepBody{ReadCloser: req.Body}
		req = req.Clone(req.Context())
		req.Body = body
		defer func() { _ = body.ReadCloser.Close() }()
	}
	for i, tg := range targets {
		if i > 0 && body != nil && body.read.Load() {
			if req.GetBody == nil || !retriable {
				break // part of the body went: not to be sent again
			}
			b, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			body = &keepBody{ReadCloser: b}
			req = req.Clone(req.Context())
			req.Body = body
		}
		resp, err := f.try(req, tg, rp)
		last := i == len(targets)-1
		if err != nil {
			lastErr = err
			var ce *connectError
			if errors.As(err, &ce) {
				if _, ok := forbidden(err); ok {
					return nil, err
				}
				f.e.policyResult(r, tg, false)
				continue // nothing was sent: always safe
			}
			if !tg.local && req.Context().Err() == nil {
				g.clusterOut.failure(tg.cluster, time.Now())
				f.e.policyResult(r, tg, false)
			}
			g.failedOver(svc, tg.label(), "reset")
			retryOn := rp == nil || rp.OnReset()
			if errors.Is(err, errPerTryTimeout) {
				retryOn = rp.OnStatus(http.StatusGatewayTimeout)
			}
			if retriable && retries < maxRetries && !last && retryOn && req.Context().Err() == nil {
				retries++
				continue
			}
			g.m.requests.WithLabelValues(svc, tg.label(), "egress", "reset").Inc()
			return nil, err
		}
		f.e.policyResult(r, tg, resp.StatusCode < 500)
		retryOn := rp == nil && resp.StatusCode == http.StatusServiceUnavailable || rp != nil && rp.OnStatus(resp.StatusCode)
		if retryOn && retriable && retries < maxRetries && !last {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			g.failedOver(svc, tg.label(), "http_"+strconv.Itoa(resp.StatusCode))
			retries++
			continue
		}
		if !tg.local {
			g.clusterOut.success(tg.cluster, time.Now())
		}
		g.m.latency.WithLabelValues(svc, tg.label(), "egress").Observe(time.Since(start).Seconds())
		g.m.requests.WithLabelValues(svc, tg.label(), "egress", strconv.Itoa(resp.StatusCode)).Inc()
		return resp, nil
	}
	g.m.requests.WithLabelValues(svc, "none", "egress", "unavailable").Inc()
	if lastErr == nil {
		lastErr = fmt.Errorf("eastwest: %s has no destination", svc)
	}
	return nil, lastErr
}

// try is one attempt at one target, within the policy's per-try timeout
// until the response headers arrive.
func (f *failoverTransport) try(req *http.Request, tg target, rp *policy.RetryPolicy) (*http.Response, error) {
	if rp == nil || rp.PerTryTimeout() <= 0 {
		return f.transport(tg).RoundTrip(req)
	}
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(rp.PerTryTimeout(), cancel)
	resp, err := f.transport(tg).RoundTrip(req.WithContext(ctx))
	if err != nil || !timer.Stop() {
		timedOut := ctx.Err() != nil && req.Context().Err() == nil
		cancel()
		if err == nil {
			_ = resp.Body.Close()
		}
		if timedOut {
			return nil, errPerTryTimeout
		}
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// errPerTryTimeout: a try ran out of the policy's perTryTimeout.
var errPerTryTimeout = fmt.Errorf("eastwest: per-try timeout: %w", context.DeadlineExceeded)

// cancelBody ends the try's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// transport returns the pooled HTTP transport to one target.
func (f *failoverTransport) transport(tg target) *http.Transport {
	e := f.e
	key := transportKey{t: tg, svc: f.k.service, port: f.k.port.Port, h2: f.h2}
	e.tmu.Lock()
	defer e.tmu.Unlock()
	if t := e.transports[key]; t != nil {
		return t
	}
	k := f.k
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := e.g.dialTarget(ctx, tg, k)
			if err != nil {
				e.g.failedOver(k.service.String(), tg.label(), failReason(err))
				return nil, &connectError{err}
			}
			switch c := c.(type) {
			case *streamConn:
				return c, nil
			case tcpDuplex:
				return c.Conn, nil
			}
			return nil, &connectError{fmt.Errorf("eastwest: unexpected connection type %T", c)}
		},
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	var p http.Protocols
	if f.h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	t.Protocols = &p
	e.transports[key] = t
	return t
}
