package eastwest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/http/httpguts"

	"github.com/meshfed/meshfed/federation/policy"
)

// The HTTP/1.1 egress fast path. An HTTP port's connection is read request
// by request; each request goes to the destination route.order picks, on
// an upstream connection pooled per destination, and its response is
// copied back. No reverse-proxy machinery (header cloning, a transport's
// two goroutines per connection): profiles of the gateway put most of the
// egress CPU there. A connection that starts with the HTTP/2 preface (h2c,
// gRPC) goes to the full reverse proxy instead (egress.go).

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxDrainRetryBody bounds how much of a 503's body is read to reuse its
// upstream before a retry.
const maxDrainRetryBody = 64 << 10

// upConn is one upstream connection (a QUIC stream to a remote gateway, or
// TCP to a local endpoint) with its buffers.
type upConn struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	qc     *quic.Conn // nil for a local endpoint
	reused bool
	idle   time.Time // when it went back to the pool
	uses   int       // requests it carried
	// maxIdle, when set, replaces upIdleTimeout (a policy's
	// connectionPool.http.idleTimeout).
	maxIdle time.Duration
}

// upIdleTimeout bounds how long an upstream connection waits in the pool:
// below the keep-alive timeouts servers commonly use (Node's 5 s), so a
// pooled connection is rarely one the server is closing.
const upIdleTimeout = 4 * time.Second

func (u *upConn) usable(now time.Time) bool {
	limit := upIdleTimeout
	if u.maxIdle > 0 {
		limit = u.maxIdle
	}
	return (u.qc == nil || u.qc.Context().Err() == nil) && (u.idle.IsZero() || now.Sub(u.idle) < limit)
}

// upPool keeps idle upstream connections per destination and service port.
type upPool struct {
	mu   sync.Mutex
	idle map[transportKey][]*upConn
}

const maxIdlePerKey = 256

func (p *upPool) get(k transportKey) *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for {
		l := p.idle[k]
		if len(l) == 0 {
			return nil
		}
		u := l[len(l)-1]
		p.idle[k] = l[:len(l)-1]
		if u.usable(now) && u.alive() {
			u.reused = true
			return u
		}
		_ = u.c.Close()
	}
}

// alive reports whether an idle upstream connection still looks open: no
// end, reset or stray bytes arrived while it sat in the pool (a server
// closing an idle keep-alive connection shows up here as EOF).
func (u *upConn) alive() bool {
	if u.br.Buffered() > 0 {
		return false // bytes nobody asked for: not a clean HTTP connection
	}
	_ = u.c.SetReadDeadline(time.Now())
	_, err := u.br.Peek(1)
	_ = u.c.SetReadDeadline(time.Time{})
	return isTimeout(err)
}

// prune closes the idle connections that are no longer usable and returns
// how many remain.
func (p *upPool) prune() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now, n := time.Now(), 0
	for k, l := range p.idle {
		keep := l[:0]
		for _, u := range l {
			if u.usable(now) && u.alive() {
				keep = append(keep, u)
			} else {
				_ = u.c.Close()
			}
		}
		p.idle[k] = keep
		n += len(keep)
	}
	return n
}

func (p *upPool) put(k transportKey, u *upConn) {
	u.idle = time.Now()
	p.mu.Lock()
	if len(p.idle[k]) < maxIdlePerKey && u.usable(u.idle) {
		p.idle[k] = append(p.idle[k], u)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = u.c.Close()
}

func (p *upPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.idle {
		for _, u := range l {
			_ = u.c.Close()
		}
		delete(p.idle, k)
	}
}

// chanListener hands connections the fast path does not serve (HTTP/2) to
// an http.Server.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn is a connection whose first bytes sit in a bufio.Reader.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// clientIdleTimeout closes a client's keep-alive connection that sends no
// new request for this long.
const clientIdleTimeout = 5 * time.Minute

// serveHTTPPort accepts an HTTP egress port's connections: HTTP/1.x on the
// fast path, HTTP/2 (prior knowledge) to h2.
func (e *egressSet) serveHTTPPort(ctx context.Context, ln net.Listener, k egressKey, h2 *chanListener, conns *connSet) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !conns.set(c, true) {
			_ = c.Close()
			continue
		}
		go func() {
			br := bufio.NewReaderSize(c, 4096)
			// "PRI" starts the HTTP/2 preface and no HTTP/1 method; a
			// client that sends less than that within the header timeout
			// is dropped.
			_ = c.SetReadDeadline(time.Now().Add(e.g.cfg.HeaderTimeout))
			if b, err := br.Peek(3); err != nil {
				conns.remove(c)
				_ = c.Close()
				return
			} else if string(b) == h2Preface[:3] {
				conns.remove(c)
				_ = c.SetReadDeadline(time.Time{})
				h2.push(&peekedConn{Conn: c, r: br})
				return
			}
			e.serveHTTP1(ctx, c, br, k, conns)
		}()
	}
}

// connSet tracks an HTTP port's client connections so a drain can close
// the idle ones at once and the busy ones after their response.
type connSet struct {
	mu       sync.Mutex
	idle     map[net.Conn]bool // true while waiting for a request
	draining bool
}

func (s *connSet) set(c net.Conn, idle bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.idle[c] = idle
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.idle, c)
	s.mu.Unlock()
}

// drain makes idle connections' reads end now; busy ones close after their
// response (set refuses them).
func (s *connSet) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for c, idle := range s.idle {
		if idle {
			_ = c.SetReadDeadline(time.Now())
		}
	}
}

// serveHTTP1 serves one client connection, request by request.
func (e *egressSet) serveHTTP1(ctx context.Context, c net.Conn, br *bufio.Reader, k egressKey, conns *connSet) {
	defer func() { _ = c.Close() }()
	defer conns.remove(c)
	bw := bufio.NewWriterSize(c, 4096)
	for n := 0; ; n++ {
		if !conns.set(c, true) {
			return
		}
		if n > 0 {
			_ = c.SetReadDeadline(time.Now().Add(clientIdleTimeout))
		}
		req, err := http.ReadRequest(br)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			if !errors.Is(err, io.EOF) && !isTimeout(err) && !errors.Is(err, net.ErrClosed) {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			}
			return
		}
		if !conns.set(c, false) {
			req.Close = true // draining: this one is the last
		}
		e.g.inflight.Add(1)
		keep := e.forward(ctx, req, c, br, bw, k)
		e.g.inflight.Done()
		if !keep || req.Close {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// upstream returns a pooled or new upstream connection to a target.
func (e *egressSet) upstream(ctx context.Context, tg target, k egressKey, fresh bool) (*upConn, transportKey, error) {
	key := transportKey{t: tg, svc: k.service, port: k.port.Port}
	if !fresh {
		if u := e.pool.get(key); u != nil {
			return u, key, nil
		}
	}
	d, err := e.g.dialTarget(ctx, tg, k)
	if err != nil {
		return nil, key, err
	}
	u := &upConn{}
	switch c := d.(type) {
	case *streamConn:
		u.c, u.qc = c, c.qc
	case tcpDuplex:
		u.c = c.Conn
	default:
		return nil, key, fmt.Errorf("eastwest: unexpected connection type %T", d)
	}
	u.br = bufio.NewReaderSize(u.c, 4096)
	u.bw = bufio.NewWriterSize(u.c, 4096)
	return u, key, nil
}

// forward sends one request to the best destination, failing over while
// nothing reached the client, and writes the response. It reports whether
// the client connection may carry another request.
//
// Under a traffic policy the first matching route applies: its fault, its
// request header operations and rewrite, a destination drawn by weight
// (then the route's other destinations as fallbacks), its retries (any
// request without a body, on the conditions of retryOn, each try within
// perTryTimeout, up to attempts, revisiting targets), its timeout over
// all tries (504 when it fires), its response header operations; the
// policy's connection pool bounds the requests in flight. Without one, an
// idempotent request without a body is retried on a 503 or a reset, up to
// Config.HTTPRetries, on the next target.
func (e *egressSet) forward(ctx context.Context, req *http.Request, client net.Conn, cbr *bufio.Reader, bw *bufio.Writer, k egressKey) bool {
	g := e.g
	svc := k.service.String()
	start := time.Now()
	r := g.table.Load().routes[k.service]
	if r == nil {
		return writeOwn(bw, req, http.StatusServiceUnavailable, nil, svc+" is not imported", false)
	}
	// Nothing of a request without a body can reach the server twice by
	// mistake: the retry rules below only replay such requests.
	noBody := req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 && len(req.TransferEncoding) == 0
	keepClient := !req.Close && noBody // after an answer of ours: an unsent body would be read as the next request
	// The client's Connection header is about its connection to this
	// gateway: the upstream connection stays pooled.
	clientClose := req.Close
	req.Close = false
	defer func() { req.Close = clientClose }()
	var (
		rule     *policy.HTTPRule
		rp       *policy.RetryPolicy
		state    *serviceState
		dests    []policy.WeightedDestination
		pick     policy.WeightedDestination
		deadline time.Time
	)
	if sp := r.pol; sp != nil {
		state = sp.state
		rule = sp.c.MatchHTTP(req.Method, req.URL.Path, req.Host, req.Header)
	}
	if rule != nil {
		if f := rule.Fault(); f != nil {
			if d, ok := f.Delay(randFloat()); ok {
				tm := time.NewTimer(d)
				select {
				case <-tm.C:
				case <-ctx.Done():
					tm.Stop()
					return false
				}
			}
			if code, ok := f.Abort(randFloat()); ok {
				g.m.requests.WithLabelValues(svc, "none", "egress", "fault_abort").Inc()
				return writeOwn(bw, req, code, nil, "fault filter abort", keepClient)
			}
		}
		rule.RequestHeaders().Apply(req.Header)
		if path, authority := rule.Rewrite(req.URL.Path, req.Host); path != req.URL.Path || authority != req.Host {
			req.URL.Path, req.URL.RawPath, req.Host = path, "", authority
		}
		if d := rule.Timeout(); d > 0 {
			deadline = start.Add(d)
		}
		rp = rule.Retries()
		dests = rule.WeightedDestinations()
		pick = rule.Pick(randFloat())
	}
	// The hop-by-hop headers stop here, after the policy matched and
	// changed the request, as on the HTTP/2 path (httputil.ReverseProxy).
	removeHopHeaders(req.Header, true)
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // Request.Write adds Go's otherwise
	}
	release, err := state.acquire(ctx, true)
	if err != nil {
		g.m.requests.WithLabelValues(svc, "none", "egress", "overflow").Inc()
		return writeOwn(bw, req, http.StatusServiceUnavailable, http.Header{"X-Meshfed-Overflow": {"true"}}, "the connection pool of "+svc+" is full", keepClient)
	}
	defer release()
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		// Answer it here, as a server reading the body would: the body
		// then follows at once and is forwarded with the request.
		req.Header.Del("Expect")
		if _, err := io.WriteString(client, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
	}
	legacyRetriable := noBody && idempotentMethod(req.Method)
	maxRetries := g.cfg.HTTPRetries
	if rp != nil {
		maxRetries = rp.Attempts()
	}
	pool := state.poolLimits()
	targets := withIdentity(r.routeTargets(dests, pick, k.port.Name, g, start, randFloat), g.table.Load().identityOf(client.RemoteAddr()))
	retries, pos := 0, 0
	// retryDone gives back the pool's retry budget the retry in flight
	// holds (policy connectionPool.http.maxRetries).
	retryDone := func() {}
	defer func() { retryDone() }()
	// Connect failures move on without counting (nothing was sent); the
	// loop ends after every target failed to connect in a row.
	connectFails := 0
	for len(targets) > 0 && connectFails < len(targets) {
		if pos >= len(targets) {
			if rp == nil {
				break
			}
			pos = 0 // a policy's retries revisit the targets, best first
		}
		tg := targets[pos]
		last := pos == len(targets)-1
		// May this try be followed by another, if it fails?
		canRetry := retries < maxRetries && (rp != nil && noBody || rp == nil && legacyRetriable && !last)
		tryDeadline := deadline
		if rp != nil && rp.PerTryTimeout() > 0 {
			if d := time.Now().Add(rp.PerTryTimeout()); tryDeadline.IsZero() || d.Before(tryDeadline) {
				tryDeadline = d
			}
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		u, key, err := e.upstream(ctx, tg, k, false)
		if err != nil {
			if st, ok := forbidden(err); ok {
				g.m.requests.WithLabelValues(svc, tg.label(), "egress", "403").Inc()
				return writeOwn(bw, req, http.StatusForbidden, nil, st.Message, keepClient)
			}
			g.failedOver(svc, tg.label(), failReason(err))
			e.policyResult(r, tg, false)
			connectFails++
			pos++
			continue // nothing was sent
		}
		connectFails = 0
		if !tryDeadline.IsZero() {
			_ = u.c.SetDeadline(tryDeadline)
		}
		resp, err := roundTrip(u, req, bw)
		if err != nil && u.reused && noBody && ctx.Err() == nil && !isTimeout(err) {
			// A pooled connection the server closed while idle: once
			// more on a fresh one to the same place, as net/http does. Not
			// the cluster's fault.
			_ = u.c.Close()
			if u, key, err = e.upstream(ctx, tg, k, true); err != nil {
				g.failedOver(svc, tg.label(), failReason(err))
				pos++
				continue
			}
			if !tryDeadline.IsZero() {
				_ = u.c.SetDeadline(tryDeadline)
			}
			resp, err = roundTrip(u, req, bw)
		}
		if err != nil {
			_ = u.c.Close()
			timedOut := isTimeout(err)
			if !tg.local && !errors.Is(err, errClientGone) && ctx.Err() == nil {
				g.clusterOut.failure(tg.cluster, time.Now())
				e.policyResult(r, tg, false)
			}
			reason := "reset"
			if timedOut {
				reason = "timeout"
			}
			g.failedOver(svc, tg.label(), reason)
			retryOn := rp == nil || timedOut && rp.OnStatus(http.StatusGatewayTimeout) || !timedOut && rp.OnReset()
			if canRetry && retryOn && !errors.Is(err, errClientGone) && !pastDeadline(deadline) {
				if done, ok := state.retryBudget(); ok {
					retryDone()
					retryDone = done
					retries++
					pos++
					continue
				}
			}
			if errors.Is(err, errClientGone) {
				return false
			}
			if timedOut {
				g.m.requests.WithLabelValues(svc, tg.label(), "egress", "504").Inc()
				return writeOwn(bw, req, http.StatusGatewayTimeout, nil, "upstream request timeout", keepClient)
			}
			g.m.requests.WithLabelValues(svc, tg.label(), "egress", "reset").Inc()
			return writeOwn(bw, req, http.StatusServiceUnavailable, nil, "the connection to "+tg.label()+" failed: "+err.Error(), false)
		}
		if !tg.local {
			g.clusterOut.success(tg.cluster, time.Now())
		}
		e.policyResult(r, tg, resp.StatusCode < 500)
		retryOn := rp == nil && resp.StatusCode == http.StatusServiceUnavailable || rp != nil && rp.OnStatus(resp.StatusCode)
		if canRetry && retryOn && !pastDeadline(deadline) {
			if done, ok := state.retryBudget(); ok {
				retryDone()
				retryDone = done
				n, cerr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainRetryBody))
				if cerr == nil && n < maxDrainRetryBody && !resp.Close {
					_ = resp.Body.Close()
					_ = u.c.SetDeadline(time.Time{})
					e.putUpstream(key, u, pool)
				} else {
					_ = u.c.Close()
				}
				g.failedOver(svc, tg.label(), "http_"+strconv.Itoa(resp.StatusCode))
				retries++
				pos++
				continue
			}
		}
		g.m.latency.WithLabelValues(svc, tg.label(), "egress").Observe(time.Since(start).Seconds())
		g.m.requests.WithLabelValues(svc, tg.label(), "egress", strconv.Itoa(resp.StatusCode)).Inc()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			removeHopHeaders(resp.Header, false) // resp.Write adds "Connection: close" where the framing needs it
		}
		if rule != nil {
			rule.ResponseHeaders().Apply(resp.Header)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// An upgrade (WebSocket): the head to the client, then raw bytes.
			_ = u.c.SetDeadline(time.Time{})
			if err := resp.Write(bw); err != nil || bw.Flush() != nil {
				_ = u.c.Close()
				return false
			}
			pipe(ctx, tcpDuplex{&peekedConn{Conn: client, r: cbr}}, upDuplex{u}, g.cfg.IdleTimeout)
			return false
		}
		keepUp := !resp.Close
		if clientClose {
			resp.Close = true // the client's connection ends after this response: say so
		}
		werr := resp.Write(bw)
		if werr == nil {
			werr = bw.Flush()
		}
		_ = resp.Body.Close()
		if keepUp && werr == nil {
			_ = u.c.SetDeadline(time.Time{})
			e.putUpstream(key, u, pool)
		} else {
			_ = u.c.Close()
		}
		if g.cfg.AccessLog != nil {
			g.cfg.AccessLog.Info("egress", "service", svc, "method", req.Method, "path", req.URL.Path, "status", resp.StatusCode,
				"destination", tg.label(), "duration", time.Since(start))
		}
		return werr == nil && !resp.Close
	}
	if pastDeadline(deadline) {
		g.m.requests.WithLabelValues(svc, "none", "egress", "504").Inc()
		return writeOwn(bw, req, http.StatusGatewayTimeout, nil, "upstream request timeout", keepClient)
	}
	g.m.requests.WithLabelValues(svc, "none", "egress", "unavailable").Inc()
	return writeOwn(bw, req, http.StatusServiceUnavailable, nil, "no cluster could serve "+svc, keepClient)
}

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1) a proxy
// does not forward: the list httputil.ReverseProxy removes.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopHeaders deletes the hop-by-hop headers from h, and those its
// Connection header names. For a request it keeps what the next hop needs
// from them: "Te: trailers", and a protocol upgrade (Connection: Upgrade
// and the Upgrade header), as httputil.ReverseProxy does. net/http keeps a
// message's framing (Content-Length, chunked, trailers) in its own fields
// and writes it anew.
func removeHopHeaders(h http.Header, request bool) {
	var upgrade string
	var teTrailers bool
	if request {
		if httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
			upgrade = h.Get("Upgrade")
		}
		teTrailers = httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	}
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name) // canonical already
	}
	if teTrailers {
		h.Set("Te", "trailers")
	}
	if upgrade != "" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upgrade)
	}
}

func pastDeadline(d time.Time) bool { return !d.IsZero() && !time.Now().Before(d) }

// policyResult feeds a request's outcome at a remote target to the
// service policy's outlier detection.
func (e *egressSet) policyResult(r *route, tg target, ok bool) {
	if r.pol == nil || tg.local {
		return
	}
	r.pol.clusterResult(r, tg.cluster, ok, time.Now())
}

// putUpstream pools an upstream connection for reuse, unless the policy's
// maxRequestsPerConnection says it has carried enough.
func (e *egressSet) putUpstream(key transportKey, u *upConn, pool policy.PoolLimits) {
	u.uses++
	if pool.MaxRequestsPerConnection > 0 && u.uses >= pool.MaxRequestsPerConnection {
		_ = u.c.Close()
		return
	}
	u.maxIdle = pool.IdleTimeout
	e.pool.put(key, u)
}

// writeOwn writes a short plain-text response of the gateway's own to
// req, and returns keep: whether the client's connection carries another
// request, which the response says ("Connection: close") when it does not.
// A response to HEAD, a 204 and a 304 carry no body, so the next response
// on the connection starts where the client expects it.
func writeOwn(bw *bufio.Writer, req *http.Request, code int, h http.Header, msg string, keep bool) bool {
	body := "meshfed gateway: " + strings.ReplaceAll(msg, "\n", " ") + "\n"
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	noBody := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if code != http.StatusNoContent && code != http.StatusNotModified {
		fmt.Fprintf(bw, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n", len(body))
	}
	if !keep {
		_, _ = io.WriteString(bw, "Connection: close\r\n")
	}
	_ = h.Write(bw)
	_, _ = io.WriteString(bw, "\r\n")
	if !noBody {
		_, _ = io.WriteString(bw, body)
	}
	_ = bw.Flush()
	return keep
}

func idempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// upDuplex adapts an upstream connection (its buffered reader first).
type upDuplex struct{ u *upConn }

func (d upDuplex) Read(p []byte) (int, error)  { return d.u.br.Read(p) }
func (d upDuplex) Write(p []byte) (int, error) { return d.u.c.Write(p) }
func (d upDuplex) CloseWrite() error           { return d.inner().CloseWrite() }
func (d upDuplex) Abort()                      { d.inner().Abort() }
func (d upDuplex) Close() error                { return d.u.c.Close() }

func (d upDuplex) inner() duplex {
	if sc, ok := d.u.c.(*streamConn); ok {
		return sc
	}
	return tcpDuplex{d.u.c}
}

// errClientGone: writing an interim response to the client failed.
var errClientGone = errors.New("eastwest: the client went away")

// roundTrip writes req on u and reads the response, passing 1xx interim
// responses (other than 101) to the client.
func roundTrip(u *upConn, req *http.Request, client *bufio.Writer) (*http.Response, error) {
	if err := req.Write(u.bw); err != nil {
		return nil, err
	}
	if err := u.bw.Flush(); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(u.br, req)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		// 103 Early Hints and the like: to the client, then the real one.
		if werr := resp.Write(client); werr != nil {
			return nil, errClientGone
		}
		if werr := client.Flush(); werr != nil {
			return nil, errClientGone
		}
		resp, err = http.ReadResponse(u.br, req)
	}
	return resp, err
}
