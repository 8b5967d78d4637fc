package eastwest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/eastwest/udpgro"
	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// Source is where the gateway's config comes from: a
// *gatewayclient.Client, or a fixed state in tests.
type Source interface {
	// State returns the current config and whether there is one.
	State() (*gatewayclient.State, bool)
	// Watch returns a channel that receives after every change.
	Watch() <-chan struct{}
}

// Reporter receives the gateway's feedback: the revision it applied (or
// rejected, and why) and its health. *gatewayclient.Client is one.
type Reporter interface {
	Report(ctx context.Context, revision uint64, applyErr error, health *gatewayv1.GatewayHealth) error
}

// Deps are what a Gateway is built from besides its Config.
type Deps struct {
	Source Source
	// SVIDs is the gateway's X509-SVID; Bundles the federated bundles
	// (this cluster's and every federated trust domain's).
	SVIDs   x509svid.Source
	Bundles *trust.BundleSet
	// Reporter, if set, gets the gateway's reports.
	Reporter Reporter
	// PacketConn, if set, is the ingress socket; otherwise Run listens on
	// the configured ingress address.
	PacketConn net.PacketConn
	// Registry, if set, gets the gateway's metrics; otherwise a new one.
	Registry *prometheus.Registry
}

// Gateway is an east-west gateway. Build it with New, run it with Run.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	src      Source
	svids    x509svid.Source
	bundles  *trust.BundleSet
	reporter Reporter
	reg      *prometheus.Registry
	m        *metrics
	guard    *trust.ConnGuard
	pconn    net.PacketConn
	ownConn  bool // pconn was opened by Run (not Deps), so Run closes it

	transport   *quic.Transport
	table       atomic.Pointer[table]
	pool        *pool
	clusterOut  *outliers[federation.ClusterName]
	endpointOut *outliers[netip.AddrPort]
	draining    atomic.Bool
	leaving     atomic.Bool // DrainDelay: not ready, still serving
	inflight    inflight
	active      atomic.Int64

	ingressMu    sync.Mutex
	liveIngress  map[*ingressStream]struct{} // piped streams, for reauthorize
	streamsByCl  map[federation.ClusterName]int
	connsByCl    map[federation.ClusterName]int
	ready        chan struct{}
	ingressAddr  atomic.Pointer[net.UDPAddr]
	egress       *egressSet
	policies     *policyCache
	lastApplied  atomic.Uint64
	reportSoon   chan struct{} // a failover or ejection happened: report soon
	lastApplyErr atomic.Pointer[error]
}

// New validates cfg and returns a Gateway.
func New(cfg Config, d Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Source == nil || d.SVIDs == nil || d.Bundles == nil {
		return nil, errors.New("eastwest: Deps.Source, SVIDs and Bundles are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg := d.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	g := &Gateway{cfg: cfg, log: log, src: d.Source, svids: d.SVIDs, bundles: d.Bundles, reporter: d.Reporter, reg: reg,
		m: newMetrics(reg), guard: trust.NewConnGuard(d.Bundles), pconn: d.PacketConn, ready: make(chan struct{}),
		streamsByCl: map[federation.ClusterName]int{}, connsByCl: map[federation.ClusterName]int{}}
	g.pool = &pool{g: g, peers: map[federation.ClusterName]map[string]*peer{}}
	reg.MustRegister(newQUICCollector(g.pool))
	g.clusterOut = newOutliers(cfg.ConsecutiveErrors, cfg.BaseEjection, cfg.MaxEjection, func(c federation.ClusterName) {
		g.m.ejections.WithLabelValues("cluster", c.String()).Inc()
		g.noteEvent()
		g.log.Warn("cluster ejected by outlier detection", "cluster", c)
	})
	g.endpointOut = newOutliers(cfg.ConsecutiveErrors, cfg.BaseEjection, cfg.MaxEjection, func(e netip.AddrPort) {
		g.m.ejections.WithLabelValues("endpoint", e.String()).Inc()
		g.log.Warn("endpoint ejected by outlier detection", "endpoint", e)
	})
	g.egress = newEgressSet(g)
	g.policies = newPolicyCache()
	g.reportSoon = make(chan struct{}, 1)
	return g, nil
}

// Ready is closed once the gateway serves: its ingress listens and the
// egress listeners of its first config are up.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// IngressAddr is the QUIC ingress address, once Ready.
func (g *Gateway) IngressAddr() *net.UDPAddr { return g.ingressAddr.Load() }

// Registry is the gateway's metrics registry.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// Handler serves /metrics, /healthz (200 while running), /readyz (200
// once Ready and not draining) and /policies (JSON: every traffic policy
// the gateway was sent, the revision in force and any rejection).
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/policies", func(w http.ResponseWriter, _ *http.Request) {
		type policyJSON struct {
			Name             string `json:"name"`
			Service          string `json:"service"`
			Revision         uint64 `json:"revision"`
			RejectedRevision uint64 `json:"rejectedRevision,omitempty"`
			Error            string `json:"error,omitempty"`
		}
		out := []policyJSON{}
		for _, p := range g.Policies() {
			out = append(out, policyJSON{Name: p.Name, Service: p.Service.String(), Revision: p.Revision,
				RejectedRevision: p.RejectedRevision, Error: p.Error})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-g.ready:
		default:
			http.Error(w, "not ready: waiting for a config", http.StatusServiceUnavailable)
			return
		}
		if g.draining.Load() || g.leaving.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

func (g *Gateway) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           g.cfg.ConnectTimeout,
		MaxIdleTimeout:                 g.cfg.MaxIdle,
		KeepAlivePeriod:                g.cfg.KeepAlive,
		MaxIncomingStreams:             int64(g.cfg.MaxStreamsPerConn),
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         8 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     maxConnWindow,
		EnableDatagrams:                true, // probes
	}
}

// maxConnWindow bounds what one remote connection may have in flight to
// this gateway: with MaxConnsPerCluster it bounds a source cluster's
// receive buffers (16 × 16 MiB = 256 MiB by default, only while the
// gateway's endpoints read slower than the peer sends).
const maxConnWindow = 16 << 20

// Run serves until ctx ends, then drains: it stops accepting, lets
// in-flight work finish for at most DrainTimeout, and returns.
func (g *Gateway) Run(ctx context.Context) error {
	watch := g.src.Watch()
	st, ok := g.src.State()
	for !ok {
		g.log.Info("waiting for the first config from the agent")
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		}
		st, ok = g.src.State()
	}
	if err := g.listen(st); err != nil {
		return err
	}
	// The table exists before the first handshake can ask who is a member.
	g.table.Store(g.compile(st))
	// Work runs under its own context, cancelled only after the drain.
	wctx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	g.transport = &quic.Transport{Conn: g.pconn}
	ln, err := g.transport.Listen(g.serverTLS(), g.quicConfig())
	if err != nil {
		if g.ownConn {
			_ = g.pconn.Close()
		}
		return fmt.Errorf("eastwest: ingress: %w", err)
	}
	g.ingressAddr.Store(g.pconn.LocalAddr().(*net.UDPAddr))
	go func() { _ = g.guard.Run(wctx) }()
	acceptDone := make(chan struct{})
	go func() { defer close(acceptDone); g.serveIngress(wctx, ln) }()

	g.apply(wctx, st)
	close(g.ready)
	g.log.Info("gateway serving", "ingress", g.IngressAddr(), "cluster", st.Self.Cluster)
	report := time.NewTicker(g.cfg.ReportInterval)
	defer report.Stop()
	g.report(wctx)
	// A failover, an ejection or a remote gateway going down is reported
	// at once (at most once a second), so the agent, the hub and the web
	// UI see it within seconds rather than at the next periodic report.
	var soon <-chan time.Time
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-g.reportSoon:
			if soon == nil {
				soon = time.After(time.Second)
			}
		case <-soon:
			soon = nil
			g.report(wctx)
		case <-watch:
			if st, ok := g.src.State(); ok {
				g.apply(wctx, st)
				g.report(wctx)
			}
		case <-report.C:
			if g.lastApplyErr.Load() != nil {
				// Something failed to apply (an egress port taken by
				// another process, say): try again.
				if st, ok := g.src.State(); ok {
					g.apply(wctx, st)
				}
			}
			g.report(wctx)
		}
	}
	if g.cfg.DrainDelay > 0 {
		g.leaving.Store(true)
		g.log.Info("leaving: not ready, still serving", "for", g.cfg.DrainDelay)
		<-time.After(g.cfg.DrainDelay)
	}
	return g.drain(wctx, cancelWork, ln, acceptDone)
}

// drain stops new work, waits for what is in flight, and closes.
func (g *Gateway) drain(ctx context.Context, cancelWork context.CancelFunc, ln *quic.Listener, acceptDone <-chan struct{}) error {
	g.draining.Store(true)
	g.log.Info("draining", "in_flight", g.active.Load(), "timeout", g.cfg.DrainTimeout)
	g.report(ctx)
	g.egress.closeListeners()
	select {
	case <-g.inflight.idle():
		g.log.Info("drained")
	case <-time.After(g.cfg.DrainTimeout):
		g.log.Warn("drain timeout; closing what is left", "in_flight", g.active.Load())
	}
	cancelWork()
	_ = ln.Close()
	<-acceptDone
	g.egress.shutdown()
	g.pool.stop()
	err := g.transport.Close()
	if g.ownConn {
		// quic-go closes only the sockets it made itself.
		_ = g.pconn.Close()
	}
	return err
}

// listen opens the ingress socket unless Deps gave one.
func (g *Gateway) listen(st *gatewayclient.State) error {
	if g.pconn != nil {
		return nil
	}
	addr := g.cfg.Ingress
	if addr == "" {
		host := ""
		if st.Self.Ingress.Bind.IsValid() {
			host = st.Self.Ingress.Bind.String()
		}
		addr = net.JoinHostPort(host, strconv.Itoa(int(st.Self.Ingress.Port)))
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("eastwest: ingress %q: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("eastwest: ingress: %w", err)
	}
	g.pconn, g.ownConn = udpgro.Wrap(pc), true
	return nil
}

// apply compiles a config revision and makes the gateway serve it.
func (g *Gateway) apply(ctx context.Context, st *gatewayclient.State) {
	t := g.compile(st)
	g.table.Store(t)
	g.reauthorize(t)
	clusters := make(map[federation.ClusterName][]string, len(st.Clusters))
	tds := make(map[federation.ClusterName]spiffeid.TrustDomain, len(st.Clusters))
	for name, c := range st.Clusters {
		if name == st.Self.Cluster {
			continue
		}
		clusters[name] = c.Gateways
		tds[name] = c.TrustDomain
	}
	g.pool.reconcile(ctx, clusters, tds)
	// Forget what left the config: outlier state, pooled upstreams.
	endpoints := map[netip.AddrPort]bool{}
	for _, ls := range st.Local {
		for _, e := range ls.Endpoints {
			for _, p := range e.Ports {
				endpoints[netip.AddrPortFrom(e.Addr, p)] = true
			}
		}
	}
	g.endpointOut.retain(func(e netip.AddrPort) bool { return endpoints[e] })
	g.clusterOut.retain(func(c federation.ClusterName) bool { _, ok := clusters[c]; return ok })
	g.egress.forget(func(k transportKey) bool {
		_, imported := st.Imports[k.svc]
		_, member := clusters[k.t.cluster]
		return imported && (k.t.local || member)
	})
	err := g.egress.reconcile(ctx, t)
	if err != nil {
		g.log.Error("config applied in part", "revision", st.Revision, "err", err)
		g.lastApplyErr.Store(&err)
	} else {
		g.lastApplyErr.Store(nil)
	}
	g.lastApplied.Store(st.Revision)
}

// compile builds the table of a config revision with the policies in
// force (each policy revision compiled once).
func (g *Gateway) compile(st *gatewayclient.State) *table {
	pols := g.policies.update(st.Policies, func(svc federation.ServiceKey, c federation.ClusterName) {
		g.m.ejections.WithLabelValues("service_cluster", svc.String()+"@"+c.String()).Inc()
		g.noteEvent()
		g.log.Warn("cluster ejected for a service by its policy's outlier detection", "service", svc, "cluster", c)
	}, func(name string, rev uint64, err error) {
		g.m.policyRej.WithLabelValues(name).Inc()
		g.log.Error("traffic policy rejected; its last good revision stays in force", "policy", name, "revision", rev, "err", err)
	})
	g.m.policyRev.Reset()
	for _, s := range g.policies.status() {
		g.m.policyRev.WithLabelValues(s.Name).Set(float64(s.Revision))
	}
	return compile(st, pols)
}

// Policies lists every traffic policy the gateway was sent: the revision
// in force and any rejection.
func (g *Gateway) Policies() []PolicyStatus { return g.policies.status() }

// Health is the gateway's view of itself, as it reports it.
func (g *Gateway) Health() *gatewayv1.GatewayHealth {
	total, up := g.pool.counts()
	h := &gatewayv1.GatewayHealth{Serving: isClosed(g.ready) && !g.draining.Load(), Draining: g.draining.Load(),
		RemoteGateways: uint32(total), RemoteGatewaysUp: uint32(up), ActiveStreams: uint32(max(g.active.Load(), 0))}
	if a := g.IngressAddr(); a != nil {
		h.IngressAddress = a.String()
	}
	if st, ok := g.src.State(); ok {
		h.Cached = st.Cached
	}
	return h
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// report sends the reporter the last applied revision and the health.
func (g *Gateway) report(ctx context.Context) {
	if g.reporter == nil {
		return
	}
	var err error
	if p := g.lastApplyErr.Load(); p != nil {
		err = *p
	}
	rev := g.lastApplied.Load()
	if rc, ok := g.src.(interface{ Rejected() (uint64, error) }); ok {
		if r, rerr := rc.Rejected(); rerr != nil {
			rev, err = r, rerr
		}
	}
	if rev == 0 {
		return // a cached config: no stream revision to report
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var e error
	// A reporter that takes the policies in force (gatewayclient.Client)
	// gets them too: the agent forwards them to the hub.
	if pr, ok := g.reporter.(interface {
		SendReport(context.Context, gatewayclient.Report) error
	}); ok {
		r := gatewayclient.Report{Revision: rev, Err: err, Health: g.Health()}
		r.Links, r.LatencyBoundsSeconds = g.linkCounters()
		for _, p := range g.Policies() {
			r.Policies = append(r.Policies, &fedv1.GatewayPolicyStatus{Name: p.Name, Revision: p.Revision, RejectedRevision: p.RejectedRevision, Error: p.Error})
		}
		e = pr.SendReport(rctx, r)
	} else {
		e = g.reporter.Report(rctx, rev, err, g.Health())
	}
	if e != nil {
		g.log.Debug("report to the agent", "err", e)
	}
}

// serverTLS is the ingress TLS config: mutual TLS by SVIDs, admitting the
// gateways of member clusters only.
func (g *Gateway) serverTLS() *tls.Config {
	c := trust.ServerTLS(g.svids, g.bundles, g.authorizePeer)
	c.NextProtos = []string{gatewayv1.ALPN}
	return c
}

// authorizePeer admits a peer whose SPIFFE ID is a gateway's, of a trust
// domain that belongs to a member cluster of the current config (not an
// external trust domain such as a SPIRE server's, and not this cluster).
func (g *Gateway) authorizePeer(id spiffeid.ID, _ [][]*x509.Certificate) error {
	t := g.table.Load()
	if t == nil {
		return &trust.AuthorizationError{ID: id.String(), Reason: "the gateway has no config yet"}
	}
	name, ok := t.clusterByTD[id.TrustDomain()]
	if !ok {
		return &trust.AuthorizationError{ID: id.String(), Reason: "trust domain is not a member cluster's"}
	}
	if id != trust.GatewayID(id.TrustDomain()) {
		return &trust.AuthorizationError{ID: id.String(), Reason: fmt.Sprintf("not the gateway of cluster %s", name)}
	}
	return nil
}

// Health implementation for route.order.
func (g *Gateway) clusterUp(c federation.ClusterName) bool { return g.pool.anyUp(c) }
func (g *Gateway) clusterEjected(c federation.ClusterName, now time.Time) bool {
	return g.clusterOut.ejected(c, now)
}
func (g *Gateway) endpointEjected(e netip.AddrPort, now time.Time) bool {
	return g.endpointOut.ejected(e, now)
}

var _ health = (*Gateway)(nil)

// mapEndpoint applies Config.EndpointMap.
func (g *Gateway) mapEndpoint(ap netip.AddrPort) netip.AddrPort {
	for p, a := range g.cfg.EndpointMap {
		if p.Contains(ap.Addr()) {
			return netip.AddrPortFrom(a, ap.Port())
		}
	}
	return ap
}

// inflight counts work in progress for the drain. Unlike a WaitGroup it
// may be added to while someone waits (a keep-alive connection's next
// request arriving during the drain).
type inflight struct {
	mu     sync.Mutex
	n      int
	waiter chan struct{}
}

func (f *inflight) Add(d int) {
	f.mu.Lock()
	f.n += d
	if f.n == 0 && f.waiter != nil {
		close(f.waiter)
		f.waiter = nil
	}
	f.mu.Unlock()
}

func (f *inflight) Done() { f.Add(-1) }

// idle returns a channel closed once nothing is in flight.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
		return ch
	}
	if f.waiter == nil {
		f.waiter = make(chan struct{})
	}
	return f.waiter
}

// failedOver counts an attempt that moved on from cluster (why: reason)
// and asks for an early report.
func (g *Gateway) failedOver(service, cluster, reason string) {
	g.m.failovers.WithLabelValues(service, cluster, reason).Inc()
	g.noteEvent()
}

// noteEvent asks the run loop for an early report (see Run).
func (g *Gateway) noteEvent() {
	select {
	case g.reportSoon <- struct{}{}:
	default:
	}
}
