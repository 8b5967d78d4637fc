package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
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
	workloads *workloadTable     // the cluster's pods by IP, for the gateways (workloads.go)
	td        spiffeid.TrustDomain
	storedLoc federation.Locality // the locality stored at join; set by Run before any goroutine
	role      *role               // whether this replica writes (leader.go)

	// st is what HTTP, DNS and the gateway stream read (status.go); mu
	// serialises its writers.
	mu sync.Mutex
	st atomic.Pointer[agentStatus]
	// stopImporter stops the importer and waits for it (nil without one).
	// Set before the hub goroutine starts, which alone calls it.
	stopImporter func()

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
	a.workloads = newWorkloadTable(a.kickGateways, a.log)
	a.role = newRole(cfg.LeaderElection.enabled())
	a.st.Store(&agentStatus{})
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
	return a.status().metricsAddr
}

// HTTPAddr returns the address the HTTP server listens on, once Run has
// started it ("" before).
func (a *Agent) HTTPAddr() string {
	return a.status().httpAddr
}

// GatewayAPIAddr returns the address the gateway API listens on, once Run
// has started it ("" before).
func (a *Agent) GatewayAPIAddr() string {
	return a.status().gwAddr
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
	a.update(func(s *agentStatus) {
		s.creds, s.source, s.importer = creds, src, imp
		if cached != nil {
			s.snap, s.cached = cached.snapshot(), true
		}
	})
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
	if kubeCS != nil {
		goRun("pod workloads", func(ctx context.Context) error { return watchPodWorkloads(ctx, kubeCS, a.workloads) })
	}
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
		a.update(func(s *agentStatus) { s.gwAddr = ln.Addr().String() })
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
		a.update(func(s *agentStatus) { s.dnsAddr = pc.LocalAddr().String() })
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
		a.update(func(s *agentStatus) { s.httpAddr = ln.Addr().String() })
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
		a.update(func(s *agentStatus) { s.desired, s.local = c.exports, c.local })
		if c.workloads != nil {
			a.workloads.replace(c.workloads)
		}
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
		st := a.status()
		snap, local := st.snap, st.local
		hub := &gatewayv1.HubState{Connected: st.connectedAt(time.Now()), Cached: st.cached}
		if snap == nil {
			// No hub state yet (never synced, no cache): gateways wait
			// rather than get a config that imports nothing.
			continue
		}
		hub.Revision = snap.revision
		cfg := buildGatewayConfig(a.gatewaySelf(snap), snap, local, a.egress.snapshot(), own, hub)
		cfg.workloads = a.workloads.snapshot()
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
	st := a.status()
	src, connected, snap, desired := st.source, st.connectedAt(time.Now()), st.snap, st.desired
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
