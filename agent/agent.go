package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/mcsdns"
	"github.com/meshfed/meshfed/internal/wait"
	"github.com/meshfed/meshfed/trust"
)

// Agent is meshfed's presence in one member cluster. Build it with New and
// run it with Run; it needs credentials stored by Join.
type Agent struct {
	cfg Config
	log *slog.Logger

	sourceBox mailbox[catalog]
	pubBox    mailbox[map[string]*fedv1.ExportedService]
	viewBox   mailbox[*view]
	gwKick    chan struct{}
	gw        *gatewayHub
	egress    *egressTable
	cmCache   *configMapCache // kubernetes source
	dns       *mcsdns.Server  // nil without Config.DNSAddr
	dnsKick   chan struct{}
	csIPs     *clusterSetIPTable // file source with Config.ClusterSetIPs
	td        spiffeid.TrustDomain
	storedLoc federation.Locality // the locality stored at join; set by Run before any goroutine
	role      *role               // whether this replica writes (leader.go)

	mu        sync.Mutex // guards the fields below, read by HTTP
	creds     *Credentials
	connected bool
	server    string
	// lastHeard is when the hub server last sent anything on the stream,
	// and heardBound how long that keeps the agent connected
	// (federation.HeartbeatMisses heartbeat intervals; 0: the hub sends
	// no heartbeats, connected while the stream is open).
	lastHeard  time.Time
	heardBound time.Duration
	// removed is why the hub refused this cluster as a non-member, once it
	// has ("" until then).
	removed   string
	lastErr   string
	snap      *view
	cached    bool // snap came from the on-disk cache, not this run's hub
	desired   map[string]*fedv1.ExportedService
	local     map[string]*gatewayv1.LocalService
	gwAddr    string
	failures  map[string]string
	conflicts map[string]importConflict
	source    catalogSource
	importer  *kubeImporter
	// stopImporter stops the importer and waits for it (nil without one).
	// Set before the hub goroutine starts, which alone calls it.
	stopImporter func()
	httpAddr     string
	metricsAddr  string
	dnsAddr      string
	rotation     CARotationState

	reg          *prometheus.Registry
	mRevision    prometheus.Gauge
	mExports     prometheus.Gauge
	mImports     prometheus.Gauge
	mReconnects  prometheus.Counter
	mPublishErrs prometheus.Counter

	mSwitchDeadline prometheus.Counter
	mWaitingMembers prometheus.Gauge
}

// New validates cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Agent{cfg: cfg, log: log.With("cluster", cfg.Cluster.String()), sourceBox: newMailbox[catalog](),
		pubBox: newMailbox[map[string]*fedv1.ExportedService](), viewBox: newMailbox[*view](), gwKick: make(chan struct{}, 1), gw: newGatewayHub()}
	a.egress = newEgressTable(cfg.EgressPortMin, cfg.EgressPortMax, a.kickGateways)
	a.role = newRole(cfg.LeaderElection.enabled())
	a.initMetrics()
	a.dnsKick = make(chan struct{}, 1)
	if cfg.DNSAddr != "" {
		s, err := mcsdns.NewServer(cfg.DNS, a.reg)
		if err != nil {
			return nil, err
		}
		a.dns = s
	}
	if cfg.Source == SourceFile && cfg.ClusterSetIPs.IsValid() {
		a.csIPs = newClusterSetIPTable(cfg.ClusterSetIPs, func() { a.kickGateways(); a.kickDNS() })
	}
	return a, nil
}

// MetricsAddr returns the address the metrics server listens on, once Run
// has started it ("" before, and without Config.MetricsAddr).
func (a *Agent) MetricsAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.metricsAddr
}

// HTTPAddr returns the address the HTTP server listens on, once Run has
// started it ("" before).
func (a *Agent) HTTPAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.httpAddr
}

// GatewayAPIAddr returns the address the gateway API listens on, once Run
// has started it ("" before).
func (a *Agent) GatewayAPIAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gwAddr
}

// kickGateways asks for the gateway config to be recomputed.
func (a *Agent) kickGateways() {
	select {
	case a.gwKick <- struct{}{}:
	default:
	}
}

// kubeRESTConfig returns the REST config of the kubernetes source.
func kubeRESTConfig(cfg Config) (*rest.Config, error) {
	if cfg.KubeConfig != nil {
		return rest.CopyConfig(cfg.KubeConfig), nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("agent: kubeconfig: %w", err)
	}
	return rc, nil
}

// openStores returns where credentials and the CA root live for cfg.
func openStores(cfg Config) (stores, error) {
	if cfg.Source != SourceKubernetes {
		return fileStores(cfg.DataDir), nil
	}
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return stores{}, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return stores{}, fmt.Errorf("agent: kubernetes client: %w", err)
	}
	return secretStores(cs, cfg.Namespace), nil
}

// Run runs the agent until ctx is done: the catalog source, the importer,
// the HTTP server and the Sync stream to the hub, reconnecting with backoff.
// It returns ErrNotJoined without stored credentials, an error wrapping
// ErrClusterRemoved once the hub has refused the cluster as removed (after
// removing its imports), and nil when ctx is cancelled.
func (a *Agent) Run(ctx context.Context) error {
	st, err := openStores(a.cfg)
	if err != nil {
		return err
	}
	if a.role.elected {
		// A standby reads what the leader stores and saves nothing.
		st.creds, st.ca, st.gwBoot = leaderStore{st.creds, a.role}, leaderStore{st.ca, a.role}, leaderStore{st.gwBoot, a.role}
	}
	b, err := st.creds.Load()
	if errors.Is(err, trust.ErrNotFound) {
		return ErrNotJoined
	}
	if err != nil {
		return fmt.Errorf("agent: credentials: %w", err)
	}
	creds, err := decodeCredentials(b)
	if err != nil {
		return err
	}
	if err := creds.checkIdentity(&a.cfg); err != nil {
		return err
	}
	// The cluster's ID (KEP-2149): checked, and written when absent by the
	// leader (an elected replica writes it once promoted, below).
	if err := checkKubeClusterID(ctx, a.cfg, a.role.isLeader(), a.log); err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(creds.TrustDomain)
	if err != nil {
		return fmt.Errorf("agent: stored credentials: trustDomain: %w", err)
	}
	a.td = td // set before any goroutine starts
	a.storedLoc = creds.storedLocality()
	if _, err := st.ca.Load(); err != nil {
		return fmt.Errorf("agent: the cluster CA root is missing (it is stored at join): %w", err)
	}
	root, err := trust.NewRootAuthority(a.cfg.rootConfig(td), st.ca)
	if err != nil {
		return fmt.Errorf("agent: cluster CA: %w", err)
	}
	defer func() { _ = root.Close() }()
	ca, err := trust.NewCA(root, a.cfg.caConfig())
	if err != nil {
		return fmt.Errorf("agent: cluster CA: %w", err)
	}
	svids, err := trust.NewSVIDSource(ca, trust.AgentID(td), trust.DefaultSVIDSourceConfig())
	if err != nil {
		return fmt.Errorf("agent: agent SVID: %w", err)
	}
	token, err := loadGatewayToken(st.gwBoot)
	if err != nil {
		return err
	}
	if a.role.isLeader() {
		if err := writeGatewayBootstrap(st.gwBoot, a.cfg.Cluster.String(), token, root); err != nil {
			return err
		}
	}
	var egressF *egressFile
	if a.cfg.Source == SourceFile {
		f := newEgressFile(filepath.Join(a.cfg.DataDir, egressFileName))
		egressF = &f
		m, err := f.load()
		if err != nil {
			a.log.Error("ignoring the egress ports file", "err", err)
		}
		a.egress.seed(m)
	}
	if a.csIPs != nil {
		if err := a.csIPs.load(filepath.Join(a.cfg.DataDir, clusterSetIPsFileName)); err != nil {
			a.log.Error("ignoring the ClusterSetIPs file", "err", err)
		}
	}

	vf := viewFile{path: filepath.Join(a.cfg.DataDir, hubStateFile)}
	cached, err := vf.load()
	if err != nil {
		// A corrupt cache is not used, and not overwritten until the hub
		// sends a full state.
		a.log.Error("ignoring the cached hub state", "err", err)
	}
	v := newView()
	if cached != nil {
		v = cached
		a.log.Info("loaded the cached hub state", "revision", v.revision)
	}

	var src catalogSource
	var imp *kubeImporter
	var reviewer tokenReviewer // kubernetes source: gateways authenticate by ServiceAccount
	var kubeCS kubernetes.Interface
	switch a.cfg.Source {
	case SourceFile:
		src = newFileSource(a.cfg.SourcePath, a.cfg.FilePollInterval, a.log)
	case SourceKubernetes:
		rcfg, err := kubeRESTConfig(a.cfg)
		if err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(rcfg)
		if err != nil {
			return fmt.Errorf("agent: kubernetes client: %w", err)
		}
		kubeCS = cs
		a.cmCache = newConfigMapCache(cs, a.cfg.Namespace, DefaultConfigMapCacheInterval, a.log)
		reviewer = newKubeTokenReviewer(cs, a.cfg.Namespace, a.cfg.GatewayServiceAccount)
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		cmView, err := a.cmCache.load(lctx)
		cancel()
		switch {
		case err != nil:
			a.log.Error("ignoring the hub state cached in ConfigMaps", "err", err)
		case cmView != nil && (cached == nil || cmView.revision > cached.revision):
			a.log.Info("loaded the hub state cached in ConfigMaps", "revision", cmView.revision)
			cached, v = cmView, cmView
		}
		ks, err := newKubeSource(rcfg, a.log)
		if err != nil {
			return err
		}
		ks.standby = a.role.standbySkips
		src = ks
		imp, err = newKubeImporter(rcfg, a.cfg, a.egress, a.log)
		if err != nil {
			return err
		}
		imp.onIPs = a.kickDNS
		imp.observeOnly = func() bool { return !a.role.isLeader() }
		// The egress ports assigned before a restart are known before the
		// gateways are served.
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = wait.Poll(sctx, wait.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}, "egress ports", imp.seedEgress)
		cancel()
		if err != nil {
			a.log.Error("serving the gateways without the egress ports recorded on ServiceImports", "err", err)
		}
	}
	a.mu.Lock()
	a.creds = creds
	a.source = src
	a.importer = imp
	if cached != nil {
		a.snap = cached.snapshot()
		a.cached = true
	}
	a.mu.Unlock()
	if cached != nil {
		a.publishView(cached, egressF)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 16) // more than goRun is called: a failing goroutine never blocks
	goRun := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("agent: %s: %w", name, err)
			}
		}()
	}
	goRun("catalog source", func(ctx context.Context) error {
		return src.Run(ctx, func(c catalog) { a.sourceBox.put(c) })
	})
	goRun("catalog", a.runCatalog)
	// leaderOnly runs fn once this replica leads (at once without
	// election).
	leaderOnly := func(name string, fn func(context.Context) error) {
		goRun(name, func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-a.role.promoted:
			}
			return fn(ctx)
		})
	}
	if a.cmCache != nil {
		leaderOnly("hub state ConfigMaps", a.cmCache.run)
	}
	if a.role.elected {
		leaderOnly("cluster ID", func(ctx context.Context) error {
			return checkKubeClusterID(ctx, a.cfg, true, a.log)
		})
	}
	goRun("agent SVID", svids.Run)
	goRun("gateway config", func(ctx context.Context) error { return a.runGatewayConfig(ctx, root, st.gwBoot, token) })
	if a.cfg.GatewayAPIAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.GatewayAPIAddr)
		if err != nil {
			return fmt.Errorf("agent: gateway API: %w", err)
		}
		a.mu.Lock()
		a.gwAddr = ln.Addr().String()
		a.mu.Unlock()
		gwCA, err := trust.NewCA(root, a.cfg.gatewayCAConfig())
		if err != nil {
			return fmt.Errorf("agent: gateway CA: %w", err)
		}
		srv := &gatewayServer{hub: a.gw, ca: gwCA, root: root, token: token, review: reviewer, gwID: trust.GatewayID(td)}
		goRun("gateway API", func(ctx context.Context) error {
			return serveGateways(ctx, ln, gatewayServerTLS(svids, ca, trust.GatewayID(td)), srv)
		})
	}
	if a.dns != nil {
		pc, ln, err := listenDNS(a.cfg.DNSAddr)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.dnsAddr = pc.LocalAddr().String()
		a.mu.Unlock()
		goRun("dns", func(ctx context.Context) error { return a.runDNS(ctx, pc, ln) })
	}
	if imp != nil {
		// The importer has a stop of its own: after a removal it must have
		// stopped writing before its objects are deleted.
		impCtx, stopImp := context.WithCancel(ctx)
		impDone := make(chan struct{})
		a.stopImporter = func() { stopImp(); <-impDone }
		goRun("importer", func(context.Context) error { defer close(impDone); return imp.Run(impCtx, &a.viewBox) })
	}
	if a.cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("agent: http: %w", err)
		}
		a.mu.Lock()
		a.httpAddr = ln.Addr().String()
		a.mu.Unlock()
		srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
		goRun("http", func(ctx context.Context) error {
			go func() { <-ctx.Done(); _ = srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if a.cfg.MetricsAddr != "" {
		if err := a.serveMetrics(goRun); err != nil {
			return err
		}
	}
	keeper := newCredentialKeeper(st.creds, creds, hubRenewer{addrs: a.cfg.HubAddresses, timeout: renewTimeout}, a.log, a.cfg.ReconnectMin, a.cfg.ReconnectMax)
	leaderOnly("hub credentials", keeper.run)
	gate := &rotationGate{a: a, root: root, hub: hubRotationAsker{a: a, keeper: keeper}, poll: a.cfg.rotationPoll()}
	leaderOnly("CA rotation gate", gate.run)
	goRun("hub", func(ctx context.Context) error { return a.runHub(ctx, keeper, root, v, vf, egressF) })
	var elDone chan struct{}
	elCtx, elCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer elCancel()
	if a.role.elected {
		goRun("standby", func(ctx context.Context) error { return a.followLeader(ctx, keeper, root) })
		el, err := newElector(kubeCS, a.cfg.Namespace, a.cfg.LeaderElection, func(lctx context.Context) {
			a.promote(lctx, keeper, root, imp, st.gwBoot, token)
		})
		if err != nil {
			return err
		}
		elDone = make(chan struct{})
		go func() {
			defer close(elDone)
			if err := el.run(elCtx, a.role); err != nil {
				errc <- err
			}
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		a.log.Error("agent stopping", "err", runErr)
	}
	cancel()
	wg.Wait()
	// Every writer has stopped: the Lease may go to a standby now.
	elCancel()
	if elDone != nil {
		<-elDone
	}
	if errors.Is(runErr, ErrClusterRemoved) && a.role.isLeader() {
		return a.clearRemovedCache(runErr)
	}
	return runErr
}

// runHub keeps one Sync stream open to some hub server, with the
// credentials the keeper holds: when a renewal replaces them, the stream and
// its connection (authenticated by the old certificate) are closed and the
// agent reconnects with the new one.
func (a *Agent) runHub(ctx context.Context, keeper *credentialKeeper, root *trust.RootAuthority, v *view, vf viewFile, egressF *egressFile) error {
	s := &syncSession{a: a, root: root, view: v, file: vf, egressF: egressF, pub: newPublisher(a.cfg.MaxPublishBatch, a.cfg.MaxPublishBytes)}
	backoff := a.cfg.ReconnectMin
	for {
		creds, changed := keeper.current()
		a.mu.Lock()
		a.creds = creds
		a.mu.Unlock()
		conn, err := a.dialHub(creds)
		if err != nil {
			return err
		}
		s.conn = conn
		var removed error
		backoff, removed = a.runSessions(ctx, s, changed, backoff)
		_ = conn.Close()
		if removed != nil {
			if !a.role.isLeader() {
				a.log.Error("this cluster was removed from the federation: stopping; the leader removes the imports", "err", removed)
				return removed
			}
			return a.leaveFederation(ctx, s, removed)
		}
		if ctx.Err() != nil {
			return nil
		}
		a.log.Info("agent certificate renewed; reconnecting to the hub with it")
	}
}

// dialHub returns a connection to the hub authenticated by creds.
func (a *Agent) dialHub(creds *Credentials) (*grpc.ClientConn, error) {
	tlsCfg, err := creds.hubTLS()
	if err != nil {
		return nil, err
	}
	addrs := creds.HubAddresses
	if len(a.cfg.HubAddresses) > 0 {
		addrs = a.cfg.HubAddresses
	}
	// Keepalive finds a hub that went silent (a partition leaves the TCP
	// connection open) within hubKeepalive + hubKeepaliveTimeout; the hub
	// permits pings every 10 s.
	conn, err := hubdial.Dial(addrs, tlsCfg, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: hubKeepalive, Timeout: hubKeepaliveTimeout, PermitWithoutStream: true}))
	if err != nil {
		return nil, fmt.Errorf("dial hub: %w", err)
	}
	return conn, nil
}

// runSessions runs Sync streams on s.conn one after another, with backoff
// between them, until ctx is done or changed is closed. It returns the
// backoff to continue with, and an ErrClusterRemoved when the hub refused
// the cluster as not a member (then it returns at once).
func (a *Agent) runSessions(ctx context.Context, s *syncSession, changed <-chan struct{}, backoff time.Duration) (time.Duration, error) {
	for {
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-sctx.Done():
			}
		}()
		start := time.Now()
		err := s.run(sctx)
		cancel()
		a.setConnected(false, "")
		if removedErr := clusterRemoved(err); removedErr != nil {
			return backoff, removedErr
		}
		select {
		case <-ctx.Done():
			return backoff, nil
		case <-changed:
			return a.cfg.ReconnectMin, nil
		default:
		}
		a.setErr(err)
		a.mReconnects.Inc()
		if time.Since(start) > 10*time.Second {
			backoff = a.cfg.ReconnectMin
		}
		wait := time.Duration(rand.Int64N(int64(backoff)) + 1) // full jitter
		a.log.Warn("hub stream ended; reconnecting", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return backoff, nil
		case <-changed:
			t.Stop()
			return a.cfg.ReconnectMin, nil
		case <-t.C:
		}
		backoff = min(2*backoff, a.cfg.ReconnectMax)
	}
}

func (a *Agent) setConnected(ok bool, server string) {
	defer a.reportSynced()
	defer a.kickGateways()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.connected, a.server = ok, server
	if ok {
		a.lastErr = ""
	}
}

// heard records that the hub server spoke at now; bound is how long that
// keeps the agent connected (0: for as long as the stream is open).
func (a *Agent) heard(now time.Time, bound time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastHeard, a.heardBound = now, bound
}

// connectedLocked reports whether the agent is connected at now: a stream
// is open and synced, and the server spoke within the bound. a.mu is held.
func (a *Agent) connectedLocked(now time.Time) bool {
	return a.connected && (a.heardBound == 0 || now.Sub(a.lastHeard) <= a.heardBound)
}

func (a *Agent) setErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.lastErr = err.Error()
	}
}

// publishView hands a snapshot of v to the importer, the gateways and the
// status, reports conflicts to the source, and returns the snapshot. With
// the file source, which has no importer, it assigns the imports' egress
// ports and saves them.
func (a *Agent) publishView(v *view, egressF *egressFile) *view {
	snap := v.snapshot()
	plans, conflicts := planImports(a.cfg.Cluster.String(), snap)
	if egressF != nil {
		changed, err := allocateFilePlans(a.egress, plans)
		if err != nil {
			a.log.Error("egress ports", "err", err)
		}
		if changed {
			if err := egressF.save(a.egress.snapshot()); err != nil {
				a.log.Error("saving the egress ports", "err", err)
			}
		}
	}
	if a.csIPs != nil {
		if err := a.csIPs.update(plans); err != nil {
			a.log.Error("ClusterSetIPs", "err", err)
		}
	}
	a.mu.Lock()
	a.snap = snap
	a.conflicts = conflicts
	src := a.source
	a.mu.Unlock()
	a.mRevision.Set(float64(snap.revision))
	a.mImports.Set(float64(len(plans)))
	a.viewBox.put(snap)
	a.kickGateways()
	a.kickDNS()
	a.reportSynced()
	if cr, ok := src.(conflictReporter); ok {
		c := make(map[string]importConflict, len(conflicts))
		for k, m := range conflicts {
			c[k] = m
		}
		cr.setConflicts(c)
	}
	return snap
}

// syncSession is the state that outlives one stream: the view and the
// publisher. It is owned by the runHub goroutine.
type syncSession struct {
	a       *Agent
	conn    *grpc.ClientConn
	root    *trust.RootAuthority
	view    *view
	file    viewFile
	egressF *egressFile
	pub     *publisher

	bundleNonce    uint64
	bundleInflight bool
}

// Keepalive of the agent's connection to the hub.
const (
	hubKeepalive        = 10 * time.Second
	hubKeepaliveTimeout = 5 * time.Second
)

// renewTimeout bounds one Sync.Renew call.
const renewTimeout = 30 * time.Second

// bundleNonceBase separates bundle nonces from export nonces.
const bundleNonceBase = 1 << 62

const publishRetry = time.Second

func (s *syncSession) run(ctx context.Context) error {
	a := s.a
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.pub.sessionEnded()
	s.bundleInflight = false
	stream, err := fedv1.NewSyncClient(s.conn).Sync(sctx)
	if err != nil {
		return err
	}
	// Every session states where this cluster's gateways are and its
	// locality, so a change of --gateway, --region or --zone after join
	// reaches the hub and the other clusters.
	// A standby's stream is read-only: it publishes nothing, acks nothing
	// and states no locality or gateways (leader.go). A promotion closes
	// the stream; the next one publishes.
	publishing := a.role.isLeader()
	hi := &fedv1.SyncHello{Cluster: a.cfg.Cluster.String(), ResumeRevision: s.view.revision, Capabilities: localCapabilities()}
	if publishing {
		hi.GatewayAddresses = a.cfg.GatewayAddresses
	}
	if publishing && !a.cfg.Locality.IsZero() {
		hi.Locality = &fedv1.Locality{Region: a.cfg.Locality.Region(), Zone: a.cfg.Locality.Zone(), Subzone: a.cfg.Locality.Subzone()}
	}
	if err := stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: hi}}); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return fmt.Errorf("sync: first message is %T, want hello", first.GetMsg())
	}
	server := hello.GetServer()
	// With heartbeats, the agent is connected only while the server spoke
	// within HeartbeatMisses intervals; past that the stream ends and the
	// agent reconnects, to another server if this one went silent.
	var bound time.Duration
	if slices.Contains(hello.GetCapabilities().GetFeatures(), federation.FeatureSyncHeartbeat) && hello.GetHeartbeatIntervalMs() > 0 {
		bound = federation.HeartbeatMisses * time.Duration(hello.GetHeartbeatIntervalMs()) * time.Millisecond
	}
	a.heard(time.Now(), bound)
	var silent <-chan time.Time
	var silentT *time.Timer
	if bound > 0 {
		silentT = time.NewTimer(bound)
		defer silentT.Stop()
		silent = silentT.C
	}
	a.log.Info("hub stream open", "server", server, "resume", s.view.revision, "heartbeat_bound", bound)

	type recvd struct {
		m   *fedv1.SyncResponse
		err error
	}
	rc := make(chan recvd, 16)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case rc <- recvd{m, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	bundleCh, stopWatch := s.root.Watch()
	defer stopWatch()

	var asm deltaAssembler
	synced, acked := false, false
	var debounce, retry <-chan time.Time
	flush := func() error {
		if !publishing {
			return nil
		}
		for m := s.pub.next(); m != nil; m = s.pub.next() {
			a.log.Debug("publishing", "nonce", m.GetNonce(), "upserts", len(m.GetUpserts()), "deletes", len(m.GetDeletes()))
			if err := stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Publish{Publish: m}}); err != nil {
				return err
			}
		}
		s.noteFailures()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-silent:
			return fmt.Errorf("%w: nothing from hub server %s for %v", errHubSilent, server, bound)
		case r := <-rc:
			if r.err != nil {
				return r.err
			}
			a.heard(time.Now(), bound)
			if silentT != nil {
				silentT.Reset(bound)
			}
			switch {
			case r.m.GetHeartbeat() != nil:
				a.log.Debug("hub heartbeat", "revision", r.m.GetHeartbeat().GetRevision(), "leader_contact_age_ms", r.m.GetHeartbeat().GetLeaderContactAgeMs())
			case r.m.GetDelta() != nil:
				full, err := asm.add(r.m.GetDelta())
				if err != nil {
					return err
				}
				if full == nil {
					continue
				}
				a.log.Debug("hub delta", "revision", full.GetRevision(), "reset", full.GetReset_(), "exports", len(full.GetExports()), "removed_exports", len(full.GetRemovedExports()))
				before := s.view.clusters[a.cfg.Cluster.String()].GetCaRotation()
				known := s.view.clusters[a.cfg.Cluster.String()] != nil
				s.view.apply(full)
				// Act on `meshfed trust rotate` before the view is saved, so a
				// crash in between rotates again (which Rotate refuses while a
				// rotation runs) rather than never.
				if after := s.view.clusters[a.cfg.Cluster.String()].GetCaRotation(); publishing && known && after > before {
					a.rotateCA(s.root, after)
				}
				if err := s.file.save(s.view); err != nil {
					a.log.Error("persisting the hub state", "err", err)
				}
				a.mu.Lock()
				a.cached = false
				a.mu.Unlock()
				snap := a.publishView(s.view, s.egressF)
				if a.cmCache != nil {
					a.cmCache.put(snap)
				}
				// The gateways have the bundles now: tell the hub, so that
				// a cluster rotating its CA knows this one holds its new root.
				if publishing {
					if err := stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Ack{Ack: s.ack(full, !acked)}}); err != nil {
						return err
					}
					acked = true
				}
				if !synced {
					synced = true
					a.setConnected(true, server)
					s.pub.sessionStarted(s.view.own(a.cfg.Cluster.String()))
					if err := flush(); err != nil {
						return err
					}
				}
				if err := s.maybePublishBundle(stream); err != nil {
					return err
				}
			case r.m.GetPublishResult() != nil:
				res := r.m.GetPublishResult()
				a.log.Debug("publish result", "nonce", res.GetNonce(), "revision", res.GetRevision(), "code", res.GetErrorCode())
				if res.GetNonce() >= bundleNonceBase {
					if res.GetNonce() == s.bundleNonce {
						s.bundleInflight = false
						if res.GetErrorCode() != "" {
							a.log.Error("the hub refused the trust bundle", "code", res.GetErrorCode(), "err", res.GetError())
							a.mPublishErrs.Inc()
							retry = time.After(publishRetry)
						}
					}
					continue
				}
				if res.GetErrorCode() != "" {
					a.mPublishErrs.Inc()
					a.log.Warn("the hub refused a publish", "code", res.GetErrorCode(), "err", res.GetError())
				}
				if s.pub.result(res) {
					retry = time.After(publishRetry)
				} else if err := flush(); err != nil {
					return err
				}
			}
		case <-a.pubBox.ch:
			if m, ok := a.pubBox.take(); ok {
				s.pub.setDesired(m)
				if debounce == nil {
					debounce = time.After(a.cfg.Debounce)
				}
			}
		case <-debounce:
			debounce = nil
			if err := flush(); err != nil {
				return err
			}
		case <-retry:
			retry = nil
			if err := flush(); err != nil {
				return err
			}
			if err := s.maybePublishBundle(stream); err != nil {
				return err
			}
		case <-bundleCh:
			if synced {
				if err := s.maybePublishBundle(stream); err != nil {
					return err
				}
			}
		}
	}
}

// ack is the Ack of delta d, applied to the view: the sequences of the
// bundles d carried, or of every bundle the view holds after a reset and
// when all is set (the first Ack of a stream, so a lost one is made up).
func (s *syncSession) ack(d *fedv1.SyncDelta, all bool) *fedv1.Ack {
	ack := &fedv1.Ack{Revision: d.GetRevision()}
	tds := sortedKeys(s.view.bundles)
	if !all && !d.GetReset_() {
		tds = nil
		for _, b := range d.GetBundles() {
			tds = append(tds, b.GetTrustDomain())
		}
	}
	for _, td := range tds {
		if b := s.view.bundles[td]; b != nil {
			ack.Bundles = append(ack.Bundles, &fedv1.BundleSequence{TrustDomain: td, SequenceNumber: b.GetSequenceNumber()})
		}
	}
	return ack
}

func (s *syncSession) noteFailures() {
	f := s.pub.failures()
	s.a.mu.Lock()
	s.a.failures = f
	s.a.mu.Unlock()
}

// rotateCA starts a CA rotation the hub asked for. The new root enters the
// bundle at once; root.Watch then republishes the bundle to the hub.
func (a *Agent) rotateCA(root *trust.RootAuthority, n uint64) {
	st, err := root.Rotate()
	switch {
	case errors.Is(err, trust.ErrRotationInProgress):
		a.log.Info("CA rotation requested while one is in progress", "ca_rotation", n)
	case err != nil:
		a.log.Error("CA rotation", "ca_rotation", n, "err", err)
	default:
		a.log.Info("CA rotation started", "ca_rotation", n, "status", fmt.Sprintf("%+v", st))
	}
}

// maybePublishBundle publishes the cluster's trust bundle when the hub's
// copy differs.
func (s *syncSession) maybePublishBundle(stream fedv1.Sync_SyncClient) error {
	if s.bundleInflight || !s.a.role.isLeader() {
		return nil
	}
	b, err := s.root.Bundle()
	if err != nil {
		return err
	}
	p := trust.BundleToProto(b)
	if have := s.view.bundles[p.GetTrustDomain()]; have != nil && proto.Equal(have, p) {
		return nil
	}
	s.bundleNonce++
	if s.bundleNonce < bundleNonceBase {
		s.bundleNonce = bundleNonceBase + 1
	}
	s.bundleInflight = true
	return stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_PublishBundle{PublishBundle: &fedv1.PublishBundle{Nonce: s.bundleNonce, Bundle: p}}})
}

// mailbox holds the latest value of something and signals its arrival;
// older values not yet taken are replaced.
type mailbox[T any] struct {
	mu  *sync.Mutex
	v   *T
	ch  chan struct{}
	has *bool
}

func newMailbox[T any]() mailbox[T] {
	var v T
	has := false
	return mailbox[T]{mu: &sync.Mutex{}, v: &v, ch: make(chan struct{}, 1), has: &has}
}

func (m *mailbox[T]) put(v T) {
	m.mu.Lock()
	*m.v, *m.has = v, true
	m.mu.Unlock()
	select {
	case m.ch <- struct{}{}:
	default:
	}
}

func (m *mailbox[T]) take() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := *m.v, *m.has
	var zero T
	*m.v, *m.has = zero, false
	return v, ok
}

// runCatalog takes each catalog from the source: the exports go to the
// hub session (whenever one runs), the local endpoints to the gateways at
// once, hub or no hub.
func (a *Agent) runCatalog(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.sourceBox.ch:
		}
		c, ok := a.sourceBox.take()
		if !ok {
			continue
		}
		a.log.Debug("catalog", "exports", len(c.exports))
		a.mu.Lock()
		a.desired, a.local = c.exports, c.local
		a.mu.Unlock()
		a.mExports.Set(float64(len(c.exports)))
		a.pubBox.put(c.exports)
		a.kickGateways()
		a.reportSynced()
	}
}

// runGatewayConfig recomputes the gateway config whenever its inputs
// change, and rewrites the gateways' bootstrap document when the cluster's
// bundle changes (a rotation).
func (a *Agent) runGatewayConfig(ctx context.Context, root *trust.RootAuthority, boot trust.Store, token string) error {
	bundleCh, stop := root.Watch()
	defer stop()
	a.kickGateways()
	var prev *gatewayConfig
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-bundleCh:
			if !a.role.isLeader() {
				break
			}
			if err := writeGatewayBootstrap(boot, a.cfg.Cluster.String(), token, root); err != nil {
				a.log.Error("gateway bootstrap", "err", err)
			}
		case <-a.gwKick:
		}
		var own *fedv1.TrustBundle
		if b, err := root.Bundle(); err == nil {
			own = trust.BundleToProto(b)
		}
		a.mu.Lock()
		snap, local := a.snap, a.local
		hub := &gatewayv1.HubState{Connected: a.connectedLocked(time.Now()), Cached: a.cached}
		a.mu.Unlock()
		if snap == nil {
			// No hub state yet (never synced, no cache): gateways wait
			// rather than get a config that imports nothing.
			continue
		}
		hub.Revision = snap.revision
		cfg := buildGatewayConfig(a.gatewaySelf(snap), snap, local, a.egress.snapshot(), own, hub)
		if a.csIPs != nil {
			cfg.setClusterSetIPs(a.csIPs.clusterSetIPs())
		}
		cfg.reuse(prev)
		prev = cfg
		a.gw.set(cfg)
	}
}

// gatewaySelf is this cluster as its gateways serve it: name, locality,
// trust domain, and the QUIC ingress (the port of the first advertised
// gateway address). The locality is Config.Locality, or without one the
// hub's record of this cluster in snap (the stored one before that).
func (a *Agent) gatewaySelf(snap *view) *gatewayv1.Self {
	loc := &fedv1.Locality{Region: a.cfg.Locality.Region(), Zone: a.cfg.Locality.Zone(), Subzone: a.cfg.Locality.Subzone()}
	if a.cfg.Locality.IsZero() {
		if rec := snap.clusters[a.cfg.Cluster.String()].GetLocality(); rec != nil {
			loc = rec
		} else {
			l := a.storedLoc
			loc = &fedv1.Locality{Region: l.Region(), Zone: l.Zone(), Subzone: l.Subzone()}
		}
	}
	me := &gatewayv1.Self{Cluster: a.cfg.Cluster.String(), TrustDomain: a.td.Name(),
		Locality: loc,
		Ingress:  &gatewayv1.Ingress{BindAddress: a.cfg.GatewayIngressBind, Alpn: gatewayv1.ALPN}}
	if len(a.cfg.GatewayAddresses) > 0 {
		if _, port, err := net.SplitHostPort(a.cfg.GatewayAddresses[0]); err == nil {
			if p, err := strconv.ParseUint(port, 10, 16); err == nil {
				me.Ingress.Port = uint32(p)
			}
		}
	}
	return me
}

// reportSynced tells the source, for each export, whether the hub holds it
// as desired, and whether the agent is connected.
func (a *Agent) reportSynced() {
	a.mu.Lock()
	src, connected, snap, desired := a.source, a.connectedLocked(time.Now()), a.snap, a.desired
	a.mu.Unlock()
	sr, ok := src.(syncReporter)
	if !ok {
		return
	}
	var own map[string]*fedv1.ExportedService
	if snap != nil {
		own = snap.own(a.cfg.Cluster.String())
	}
	published := make(map[string]bool, len(desired))
	for k, d := range desired {
		h, ok := own[k]
		published[k] = ok && exportEqual(h, d)
	}
	sr.setSynced(connected, published)
}
