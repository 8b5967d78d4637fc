// Package hub is the meshfed hub server: the federation's state replicated
// with hashicorp/raft (raft-wal log, file snapshots), server discovery and
// failure detection with hashicorp/memberlist, and the gRPC API (Join, Sync,
// Admin) served over TLS from the hub's own CA.
//
// Any server answers any call. Writes are forwarded to the leader and
// acknowledged only once committed and applied. Reads are consistent: a
// server first learns the leader's commit index (ReadIndex) and answers only
// after it has applied that far, or says Unavailable.
package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// Server is one hub server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	keys *peerKeys // nil without an encrypt key

	fsm        *fsm.FSM
	raft       *raft.Raft
	wal        *wal.WAL
	walMeta    *metadb.BoltMetaDB
	stable     *gatedStable
	transport  *raft.NetworkTransport
	gossip     *memberlist.Memberlist
	gossipMsgs chan []byte
	members    *memberTracker
	boot       *bootstrapper

	bundleLns  []net.Listener
	bundleSrvs []*http.Server
	fetchers   *fetchers

	grpc     *grpc.Server
	grpcLn   net.Listener
	http     *http.Server
	httpLn   net.Listener
	certs    *certManager
	peers    *peerConns
	metrics  *metrics
	registry *prometheus.Registry

	// readyTerm is the Raft term in which this server, as leader, has
	// applied everything from earlier terms (a barrier succeeded in it).
	readyTerm atomic.Uint64
	streams   atomic.Int64
	conns     *connTracker
	// The web UI: traffic summaries of this server's Sync streams, its
	// timeline, and the views' engine.
	traffic  *trafficStore
	timeline *timeline
	ui       *uiEngine
	readyz   readyCache
	// protoFloor caches the lowest protocol version among the servers
	// (checkProtocol).
	protoFloor protocolFloor

	stopOnce sync.Once
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

// New validates cfg, opens the data directory and binds every port. Call Run.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("server", cfg.Name)
	s := &Server{cfg: cfg, log: log, stopCh: make(chan struct{}), fsm: fsm.New(log), boot: newBootstrapper(), conns: newConnTracker()}
	if cfg.EncryptKey == "" {
		log.Warn("NO ENCRYPT KEY: Raft and gossip traffic between hub servers is neither encrypted nor authenticated; anyone who reaches these ports can join the hub. Generate one with `meshfed hub keygen` and pass --encrypt-key to every server.")
	} else {
		k, _ := DecodeEncryptKey(cfg.EncryptKey) // validated
		keys, err := derivePeerKeys(k)
		if err != nil {
			return nil, err
		}
		s.keys = keys
	}
	if cfg.UIAnonymous {
		log.Warn(uiAnonymousWarning)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "raft", "wal"), 0o700); err != nil {
		return nil, fmt.Errorf("hub: data dir: %w", err)
	}
	s.registry = prometheus.NewRegistry()
	s.metrics = newMetrics(s, s.registry)
	s.traffic = newTrafficStore()
	s.timeline = newTimeline(cfg.Name, MaxTimelineEvents)
	s.ui = newUIEngine(s, s.registry)
	s.certs = newCertManager(s.certIdentity(), fsmCA{s.fsm}, log, s.writeAdminConfig)
	s.peers = newPeerConns(s)
	s.fetchers = newFetchers(s)
	s.members = newMemberTracker()
	ok := false
	defer func() {
		if !ok {
			_ = s.closeAll() // the construction error is the one to report
		}
	}()
	if err := s.setupRaft(); err != nil {
		return nil, err
	}
	if err := s.setupGRPC(); err != nil {
		return nil, err
	}
	if err := s.setupHTTP(); err != nil {
		return nil, err
	}
	if err := s.setupBundleEndpoints(); err != nil {
		return nil, err
	}
	if err := s.setupGossip(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func (s *Server) addr(port int) string {
	return net.JoinHostPort(s.cfg.BindAddr, strconv.Itoa(port))
}

// advertiseIP is the address peers and clients use to reach this server.
func (s *Server) advertiseIP() string {
	if s.cfg.AdvertiseAddr != "" {
		return s.cfg.AdvertiseAddr
	}
	return s.cfg.BindAddr
}

// advertised is the advertised host:port of a listener.
func (s *Server) advertised(ln net.Addr) string {
	return net.JoinHostPort(s.advertiseIP(), strconv.Itoa(ln.(*net.TCPAddr).Port))
}

// GRPCAddr is the address agents and operators dial.
func (s *Server) GRPCAddr() string { return s.advertised(s.grpcLn.Addr()) }

// HTTPAddr is the health and metrics address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Name is the server's name.
func (s *Server) Name() string { return s.cfg.Name }

// AdminConfigPath is where the server writes admin.yaml.
func (s *Server) AdminConfigPath() string { return filepath.Join(s.cfg.DataDir, "admin.yaml") }

// certIdentity is what this server's certificates name: its SPIFFE ID and
// the addresses it is reached at, and whether it serves a bundle endpoint.
func (s *Server) certIdentity() certIdentity {
	ips := []net.IP{net.ParseIP(s.advertiseIP())}
	if bind := net.ParseIP(s.cfg.BindAddr); !bind.IsUnspecified() && !bind.Equal(ips[0]) {
		ips = append(ips, bind)
	}
	return certIdentity{
		trustDomain: s.cfg.TrustDomain, name: s.cfg.Name, ips: ips, ttl: s.cfg.ServerCertTTL,
		bundleEndpoint: s.cfg.BundlePort != 0, dir: filepath.Join(s.cfg.DataDir, "tls"),
	}
}

// logWriter adapts library loggers that want an io.Writer to slog.
type logWriter struct {
	log *slog.Logger
	lib string
}

func (w logWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.Contains(msg, "[ERR"):
		level = slog.LevelWarn // library errors are mostly peers going away; we log our own errors
	case strings.Contains(msg, "[WARN"):
		level = slog.LevelInfo
	case strings.Contains(msg, "[INFO"):
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, msg, "lib", w.lib)
	return len(p), nil
}

func (s *Server) setupRaft() error {
	dir := filepath.Join(s.cfg.DataDir, "raft")
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Output: logWriter{s.log, "raft"}, Level: hclog.Info})
	// raft-wal's Close leaves its meta DB open (and flock-ed); we own it so
	// that a server can be restarted within one process.
	s.walMeta = &metadb.BoltMetaDB{}
	segment := wal.DefaultSegmentSize
	if s.cfg.walSegmentSize > 0 {
		segment = s.cfg.walSegmentSize
	}
	w, err := wal.Open(filepath.Join(dir, "wal"), wal.WithMetaStore(s.walMeta),
		wal.WithLogger(hlog.Named("wal")), wal.WithSegmentSize(segment))
	if err != nil {
		return fmt.Errorf("hub: open raft log: %w", err)
	}
	s.wal = w
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		return fmt.Errorf("hub: snapshot store: %w", err)
	}
	var tlsCfg *tls.Config
	if s.keys != nil {
		tlsCfg = s.keys.raftTLS
	}
	layer, err := newStreamLayer(s.addr(s.cfg.RaftPort), s.advertiseIP(), tlsCfg)
	if err != nil {
		return err
	}
	s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
		ServerAddressProvider: s.members,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.Name)
	rc.Logger = hlog
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.TrailingLogs = s.cfg.TrailingLogs
	// A removed server must not disrupt the cluster with elections.
	rc.ShutdownOnRemove = false
	s.stable = &gatedStable{StableStore: w}
	r, err := raft.NewRaft(rc, s.fsm, w, s.stable, snaps, s.transport)
	if err != nil {
		return fmt.Errorf("hub: start raft: %w", err)
	}
	s.raft = r
	return nil
}

func (s *Server) setupGRPC() error {
	ln, err := net.Listen("tcp", s.addr(s.cfg.GRPCPort))
	if err != nil {
		return fmt.Errorf("hub: grpc listen: %w", err)
	}
	s.grpcLn = ln
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.certs.serverTLS())),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxConcurrentStreams(4096),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.authUnary, s.readyUnary, s.requestUnary),
		grpc.ChainStreamInterceptor(s.authStream, s.readyStream),
	)
	fedv1.RegisterJoinServer(s.grpc, &joinService{s: s, limit: newIPLimiter(s.cfg.JoinRate, s.cfg.JoinBurst)})
	fedv1.RegisterSyncServer(s.grpc, &syncService{s: s})
	fedv1.RegisterAdminServer(s.grpc, &adminService{s: s})
	hubpb.RegisterInternalServer(s.grpc, &internalService{s: s})
	return nil
}

// Run serves until ctx is done, then shuts the server down gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.stopCh:
	}
	return s.Shutdown()
}

// Start begins serving in the background.
func (s *Server) Start() error {
	s.goFunc(func() {
		// Until the server has a certificate, connections wait in the
		// listen backlog: a TLS handshake would fail without a reason.
		// A restarted server has the one it had (persisted) at once.
		select {
		case <-s.certs.haveCert:
		case <-s.stopCh:
			return
		}
		if err := s.grpc.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("grpc serve", "err", err)
		}
	})
	s.goFunc(func() {
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http serve", "err", err)
		}
	})
	s.goFunc(s.joinLoop)
	s.goFunc(s.gossipMsgLoop)
	s.goFunc(s.leaderLoop)
	s.goFunc(s.reconcileLoop)
	s.goFunc(s.leaseLoop)
	s.goFunc(func() { s.ui.run(s.stopCh) })
	s.goFunc(func() { s.certs.run(s.stopCh) })
	s.goFunc(s.fetchers.run)
	for _, ln := range s.bundleLns {
		srv := &http.Server{Handler: s.bundleHandler(), ReadHeaderTimeout: 5 * time.Second}
		s.bundleSrvs = append(s.bundleSrvs, srv)
		s.goFunc(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("bundle endpoint serve", "err", err)
			}
		})
	}
	s.log.Info("hub server started", "grpc", s.GRPCAddr(), "raft", s.transport.LocalAddr(),
		"gossip", s.addr(s.cfg.GossipPort), "http", s.HTTPAddr(), "bootstrap_expect", s.cfg.BootstrapExpect)
	return nil
}

func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Shutdown stops serving and closes Raft and gossip without leaving the
// gossip pool: a stopped server is a failed one to its peers, so a rolling
// restart never shrinks the Raft configuration. Removal is the leader's job
// after DeadServerGrace, or an operator's.
func (s *Server) Shutdown() error {
	var err error
	s.stopOnce.Do(func() {
		close(s.stopCh)
		err = s.closeAll()
	})
	return err
}

// Kill stops the server abruptly, as a crash would: no gossip leave, no
// graceful stream shutdown. What Raft fsynced stays on disk. For tests.
func (s *Server) Kill() {
	s.stopOnce.Do(func() {
		close(s.stopCh)
		_ = s.closeAll()
	})
}

func (s *Server) closeAll() error {
	var errs []error
	if s.grpc != nil {
		s.grpc.Stop()
	}
	if s.grpcLn != nil {
		_ = s.grpcLn.Close() // not Serve's yet if there was never a certificate
	}
	if s.http != nil {
		_ = s.http.Close()
	} else if s.httpLn != nil {
		_ = s.httpLn.Close()
	}
	for _, srv := range s.bundleSrvs {
		_ = srv.Close()
	}
	if len(s.bundleSrvs) == 0 {
		for _, ln := range s.bundleLns {
			_ = ln.Close()
		}
	}
	if s.gossip != nil {
		if err := s.gossip.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.transport != nil {
		_ = s.transport.Close()
	}
	s.wg.Wait()
	s.peers.close()
	if s.stable != nil {
		s.stable.close()
	}
	if s.wal != nil {
		if err := s.wal.Close(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			errs = append(errs, err)
		}
	}
	if s.walMeta != nil {
		if err := s.walMeta.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leaderLoop tracks leadership. On gaining it, it runs a barrier so that
// everything from earlier terms is applied before the server answers reads as
// leader, then makes sure the hub CA exists.
func (s *Server) leaderLoop() {
	obs := make(chan raft.Observation, 16)
	observer := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(observer)
	defer s.raft.DeregisterObserver(observer)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.stopCh:
			return
		case <-obs:
		case <-tick.C:
		}
		if s.raft.State() != raft.Leader {
			continue
		}
		term := s.raft.CurrentTerm()
		if s.readyTerm.Load() == term {
			continue
		}
		if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
			s.log.Warn("leader barrier failed", "err", err)
			continue
		}
		if s.raft.State() != raft.Leader || s.raft.CurrentTerm() != term {
			continue
		}
		s.readyTerm.Store(term)
		s.log.Info("leader ready", "term", term, "applied_index", s.fsm.AppliedIndex())
		if err := s.ensureCA(); err != nil {
			s.log.Error("create hub CA", "err", err)
		}
	}
}

// leaderReady reports whether this server is the leader and has applied
// everything committed before its term.
func (s *Server) leaderReady() bool {
	return s.raft.State() == raft.Leader && s.readyTerm.Load() == s.raft.CurrentTerm()
}

// gatedStable is the Raft stable store, closed before the WAL is. A
// heartbeat that the transport is still handling while the server shuts
// down may try to persist a new term; raft panics on a store error, and
// acknowledging a term it did not persist would be unsafe. So after close a
// write waits for the process to end instead: no response goes out.
type gatedStable struct {
	raft.StableStore
	mu     sync.RWMutex
	closed bool
}

func (g *gatedStable) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gatedStable) enter() {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		select {} // shutting down: never persist, never answer
	}
}

// Set implements raft.StableStore.
func (g *gatedStable) Set(k, v []byte) error {
	g.enter()
	defer g.mu.RUnlock()
	return g.StableStore.Set(k, v)
}

// SetUint64 implements raft.StableStore.
func (g *gatedStable) SetUint64(k []byte, v uint64) error {
	g.enter()
	defer g.mu.RUnlock()
	return g.StableStore.SetUint64(k, v)
}
