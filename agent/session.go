package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/trust"
)

// runHub keeps one Sync stream open to some hub server, with the
// credentials the keeper holds: when a renewal replaces them, the stream and
// its connection (authenticated by the old certificate) are closed and the
// agent reconnects with the new one.
func (a *Agent) runHub(ctx context.Context, keeper *credentialKeeper, root *trust.RootAuthority, v *view, vf viewFile, egressF *egressFile) error {
	s := &syncSession{a: a, root: root, view: v, file: vf, egressF: egressF, pub: newPublisher(a.cfg.MaxPublishBatch, a.cfg.MaxPublishBytes)}
	backoff := a.cfg.ReconnectMin
	for {
		creds, changed := keeper.current()
		a.update(func(s *agentStatus) { s.creds = creds })
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
	a.update(func(s *agentStatus) {
		s.connected, s.server = ok, server
		if ok {
			s.lastErr = ""
		}
	})
}

// heard records that the hub server spoke at now; bound is how long that
// keeps the agent connected (0: for as long as the stream is open).
func (a *Agent) heard(now time.Time, bound time.Duration) {
	a.update(func(s *agentStatus) { s.lastHeard, s.heardBound = now, bound })
}

func (a *Agent) setErr(err error) {
	if err != nil {
		a.update(func(s *agentStatus) { s.lastErr = err.Error() })
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
	var src catalogSource
	a.update(func(s *agentStatus) { s.snap, s.conflicts, src = snap, conflicts, s.source })
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
	// The gateways' policy statuses (gatewaypolicies.go): forwarded by
	// every replica, leader or standby, for the gateways connected to it,
	// once synced, a change debounced, restated every
	// GatewayPolicyRefresh.
	var fwd policyForwarder
	var polDebounce <-chan time.Time
	// The gateways' traffic (traffic.go): every TrafficInterval, and
	// sooner on a failover or a replica come or gone (at most every
	// minTrafficGap), once synced, when the hub takes it.
	var trafficTick, trafficGap <-chan time.Time
	var trafficKick <-chan struct{}
	if slices.Contains(hello.GetCapabilities().GetFeatures(), federation.FeatureSyncTraffic) {
		t := time.NewTicker(a.cfg.TrafficInterval)
		defer t.Stop()
		trafficTick, trafficKick = t.C, a.gw.traffic.kick
	}
	var lastTraffic time.Time
	sendTraffic := func() error {
		if !synced || trafficTick == nil {
			return nil
		}
		now := time.Now()
		lastTraffic = now
		m := a.gw.traffic.summary(now, a.gw.trafficGateways())
		return stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Traffic{Traffic: m}})
	}
	polRefresh := time.NewTimer(GatewayPolicyRefresh)
	defer polRefresh.Stop()
	forwardPolicies := func() error {
		if !synced {
			return nil
		}
		now := time.Now()
		if m := fwd.next(a.gw.policyReport(a.log), now); m != nil {
			a.log.Debug("forwarding the gateways' policy statuses", "replicas", len(m.GetReplicas()))
			if err := stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_GatewayPolicies{GatewayPolicies: m}}); err != nil {
				return err
			}
		}
		polRefresh.Reset(fwd.refreshIn(now))
		return nil
	}
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
				a.update(func(s *agentStatus) { s.cached = false })
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
					if err := forwardPolicies(); err != nil {
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
		case <-a.gw.policies:
			if polDebounce == nil {
				polDebounce = time.After(a.cfg.Debounce)
			}
		case <-polDebounce:
			polDebounce = nil
			if err := forwardPolicies(); err != nil {
				return err
			}
		case <-polRefresh.C:
			if err := forwardPolicies(); err != nil {
				return err
			}
		case <-trafficTick:
			if err := sendTraffic(); err != nil {
				return err
			}
		case <-trafficKick:
			if wait := minTrafficGap - time.Since(lastTraffic); wait > 0 {
				if trafficGap == nil {
					trafficGap = time.After(wait)
				}
				continue
			}
			if err := sendTraffic(); err != nil {
				return err
			}
		case <-trafficGap:
			trafficGap = nil
			if err := sendTraffic(); err != nil {
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
	s.a.update(func(st *agentStatus) { st.failures = f })
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
