package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// Limits of the Sync stream's messages. A change set larger than either is
// split over several SyncDelta messages, the last of which carries the
// revision.
const (
	// MaxDeltaRecords bounds the records in one SyncDelta message.
	MaxDeltaRecords = 512
	// MaxDeltaBytes bounds the encoded size of one SyncDelta message: the
	// gRPC default receive limit, so any client takes it. One record is at
	// most MaxMessageSize (the request that carried it), so it always fits.
	MaxDeltaBytes = 4 << 20
	// MaxCommandSize bounds a Raft command: a message's worth, less room
	// for the envelope that forwards it to the leader.
	MaxCommandSize = MaxMessageSize - 16<<10
)

type syncService struct {
	fedv1.UnimplementedSyncServer
	s *Server
}

// Sync serves one agent. The stream's identity (from its client certificate)
// is the only cluster it may publish for.
//
// Every message goes out through a syncSender, so a send that the agent's
// flow control blocks for SyncSendTimeout ends this stream (the agent
// resumes from its revision when it reconnects) and never holds up others.
// With feature sync.heartbeat, a heartbeat goes out every
// SyncHeartbeatInterval while this server is healthy (syncHealthy).
func (y *syncService) Sync(stream fedv1.Sync_SyncServer) error {
	s := y.s
	ctx := stream.Context()
	id, _ := callerIdentity(ctx)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return invalidArg("hello", "the first message on a Sync stream must be a SyncHello")
	}
	if hello.GetCluster() != id.name {
		return status.Errorf(codes.PermissionDenied, "hello.cluster: %q, but this agent's certificate is for cluster %q", hello.GetCluster(), id.name)
	}
	if err := validateCapabilities("hello.capabilities", hello.GetCapabilities()); err != nil {
		return err
	}
	view, err := s.consistentRead(ctx)
	if err != nil {
		return err
	}
	if err := checkMember(view, id); err != nil {
		return err
	}
	if err := s.updateClusterEndpoint(view.Cluster(id.name), hello); err != nil {
		return err
	}
	out := newSyncSender(stream, s.cfg.SyncSendTimeout)
	defer out.close()
	heartbeats := slices.Contains(federation.Negotiate(localCapabilities().GetFeatures(), hello.GetCapabilities().GetFeatures()), federation.FeatureSyncHeartbeat)
	helloResp := &fedv1.SyncHelloResponse{Capabilities: localCapabilities(), Server: s.cfg.Name}
	if heartbeats {
		helloResp.HeartbeatIntervalMs = s.cfg.SyncHeartbeatInterval.Milliseconds()
	}
	if err := out.send(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_Hello{Hello: helloResp}}); err != nil {
		return y.sendFailed(id.name, err)
	}
	s.streams.Add(1)
	defer s.streams.Add(-1)
	defer s.conns.hold(id.name)()

	acks := newAckRecorder(s, id.name)
	go acks.run(ctx)
	gwPolicies := newGatewayPolicyRecorder(s, id.name)
	go gwPolicies.run(ctx)
	streamID := s.traffic.open()
	defer s.traffic.drop(streamID)
	rec := recorders{acks: acks, gwPolicies: gwPolicies, stream: streamID}

	recv := make(chan *fedv1.SyncRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case recv <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	// The heartbeat ticker runs only when negotiated; a nil channel never
	// fires.
	var beat <-chan time.Time
	if heartbeats {
		t := time.NewTicker(s.cfg.SyncHeartbeatInterval)
		defer t.Stop()
		beat = t.C
	}
	lastBeat := time.Now()

	sent := hello.GetResumeRevision()
	store := s.fsm.Store()
	d := view.Changes(sent)
	if err := y.sendDelta(out, d); err != nil {
		return y.sendFailed(id.name, err)
	}
	sent = d.Revision
	for {
		// The agent's own messages first, one at a time: under a burst of
		// other clusters' commits there is always a delta to send, and a
		// publish must not wait until the stream has caught up with them.
		select {
		case m := <-recv:
			if err := y.handle(ctx, out, id.name, rec, m); err != nil {
				return y.sendFailed(id.name, err)
			}
		default:
		}
		watch := store.Watch()
		// Catch up with anything committed since the last send.
		if cur := s.fsm.Store(); cur != store {
			store = cur
			continue
		}
		view := store.Read()
		if err := checkMember(view, id); err != nil {
			return err
		}
		if d := view.Changes(sent); !d.Empty() {
			if err := y.sendDelta(out, d); err != nil {
				return y.sendFailed(id.name, err)
			}
			sent = d.Revision
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopCh:
			return status.Error(codes.Unavailable, "hub: server shutting down; reconnect to another")
		case err := <-recvErr:
			return err
		case <-watch:
		case now := <-beat:
			// A tick long overdue means this process was paused (SIGSTOP, a
			// long GC): what it believed about its leadership may be stale,
			// so it skips a beat and lets Raft catch up first.
			paused := now.Sub(lastBeat) > 2*s.cfg.SyncHeartbeatInterval
			lastBeat = now
			age, healthy := s.syncHealthy()
			if paused || !healthy {
				continue
			}
			hb := &fedv1.SyncHeartbeat{Revision: sent, LeaderContactAgeMs: age.Milliseconds()}
			if err := out.send(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_Heartbeat{Heartbeat: hb}}); err != nil {
				return y.sendFailed(id.name, err)
			}
		case m := <-recv:
			if err := y.handle(ctx, out, id.name, rec, m); err != nil {
				return y.sendFailed(id.name, err)
			}
		}
	}
}

// sendFailed logs a stream dropped because the agent stopped reading and
// returns err.
func (y *syncService) sendFailed(cluster string, err error) error {
	if errors.Is(err, errSlowConsumer) {
		y.s.metrics.slowConsumers.Inc()
		y.s.log.Warn("sync stream dropped: the agent is not reading", "cluster", cluster, "send_timeout", y.s.cfg.SyncSendTimeout)
		return withReason(codes.Unavailable, federation.ReasonSlowConsumer,
			"hub: a Sync message waited more than %v (SyncSendTimeout) for the agent to read; reconnect and resume", y.s.cfg.SyncSendTimeout)
	}
	return err
}

// syncHealthy reports whether this server may tell its agents they are
// connected: it is the leader and has applied everything from earlier
// terms, or it is a follower that heard from the leader within
// HeartbeatTimeout (after which it would call an election). age is how long
// ago it heard from the leader (0 on the leader).
func (s *Server) syncHealthy() (age time.Duration, ok bool) {
	if s.leaderReady() {
		return 0, true
	}
	if s.raft.State() != raft.Follower {
		return 0, false
	}
	last := s.raft.LastContact()
	if last.IsZero() {
		return 0, false
	}
	age = time.Since(last)
	return age, age <= s.cfg.HeartbeatTimeout
}

// errSlowConsumer: a send waited SyncSendTimeout.
var errSlowConsumer = errors.New("hub: sync send timed out")

// syncSender sends a stream's messages from a goroutine of its own, so that
// a send blocked by the agent's flow control (it stopped reading) can be
// given up after a deadline: the handler then returns, which ends the
// stream and with it the blocked send. Only the handler's goroutine calls
// send.
type syncSender struct {
	stream  fedv1.Sync_SyncServer
	timeout time.Duration
	msgs    chan *fedv1.SyncResponse
	errs    chan error
}

func newSyncSender(stream fedv1.Sync_SyncServer, timeout time.Duration) *syncSender {
	o := &syncSender{stream: stream, timeout: timeout, msgs: make(chan *fedv1.SyncResponse), errs: make(chan error, 1)}
	go func() {
		for m := range o.msgs {
			o.errs <- stream.Send(m)
		}
	}()
	return o
}

// send sends m, or returns errSlowConsumer once it has waited the timeout.
// After an error the stream is done: the caller returns.
func (o *syncSender) send(m *fedv1.SyncResponse) error {
	o.msgs <- m // the goroutine waits for it: the previous send returned
	t := time.NewTimer(o.timeout)
	defer t.Stop()
	select {
	case err := <-o.errs:
		return err
	case <-t.C:
		return errSlowConsumer
	}
}

// close ends the sending goroutine once its current send returns.
func (o *syncSender) close() { close(o.msgs) }

// checkMember refuses a stream whose cluster was removed, or whose
// certificate is no longer the cluster's current one (a later join or
// renewal replaced it). A removed cluster's refusal carries reason
// CLUSTER_REMOVED, on which its agent stops.
func checkMember(view *state.ReadTxn, id identity) error {
	c := view.Cluster(id.name)
	if c == nil {
		return errNotMember(id.name)
	}
	if c.GetAgentCertSerial() != id.serial {
		return errSuperseded(id)
	}
	return nil
}

// errNotMember refuses a cluster certificate whose cluster is not a member
// (it was removed), with reason CLUSTER_REMOVED.
func errNotMember(cluster string) error {
	return withReason(codes.PermissionDenied, federation.ReasonClusterRemoved, "cluster %q is not a member of the federation: it was removed", cluster)
}

// withReason is a gRPC status error with a google.rpc.ErrorInfo naming
// reason in federation.ErrorDomain.
func withReason(code codes.Code, reason, format string, args ...any) error {
	st := status.Newf(code, format, args...)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: federation.ErrorDomain, Reason: reason}); err == nil {
		st = d
	}
	return st.Err()
}

// updateClusterEndpoint records the gateway addresses and locality an
// agent states in its hello when they differ from its record (a gateway
// moved, a cluster relabelled its zone), so every other cluster's gateways
// follow. Invalid values refuse the stream (the agent says which field);
// an older agent that sends neither changes nothing. The write is
// asynchronous, like the status: the stream does not wait for it.
func (s *Server) updateClusterEndpoint(cur *fedv1.ClusterRecord, hello *fedv1.SyncHello) error {
	loc, addrs := hello.GetLocality(), hello.GetGatewayAddresses()
	if loc == nil && len(addrs) == 0 {
		return nil
	}
	if err := validateGatewayAddrs("hello.gateway_addresses", addrs); err != nil {
		return err
	}
	if loc == nil {
		loc = cur.GetLocality()
	} else if _, err := validateLocality("hello.locality", loc); err != nil {
		return err
	}
	if len(addrs) == 0 {
		addrs = cur.GetGatewayAddresses() // none stated: unchanged
	}
	if proto.Equal(loc, cur.GetLocality()) && slices.Equal(addrs, cur.GetGatewayAddresses()) {
		return nil
	}
	cmd := &hubpb.CmdUpdateClusterEndpoint{Cluster: cur.GetName(), Locality: loc, GatewayAddresses: addrs}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
		defer cancel()
		if _, err := s.apply(ctx, fsm.UpdateClusterEndpointType, cmd); err != nil {
			s.log.Warn("cluster endpoint not updated", "cluster", cmd.GetCluster(), "gateway_addresses", addrs, "err", err)
			return
		}
		s.log.Info("cluster endpoint updated", "cluster", cmd.GetCluster(), "locality", loc, "gateway_addresses", addrs)
	}()
	return nil
}

// recorders are what one stream's messages are recorded by, off the
// stream's goroutine or in memory.
type recorders struct {
	acks       *ackRecorder
	gwPolicies *gatewayPolicyRecorder
	// stream identifies the stream's traffic summary (trafficStore).
	stream uint64
}

func (y *syncService) handle(ctx context.Context, stream *syncSender, cluster string, rec recorders, m *fedv1.SyncRequest) error {
	s := y.s
	switch msg := m.GetMsg().(type) {
	case *fedv1.SyncRequest_Publish:
		p := msg.Publish
		res := &fedv1.PublishResult{Nonce: p.GetNonce()}
		idx, err := y.publish(ctx, cluster, p)
		res.Revision = idx
		if err != nil {
			st := status.Convert(err)
			res.ErrorCode, res.Error = st.Code().String(), st.Message()
			if st.Code() == codes.PermissionDenied {
				if serr := stream.send(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_PublishResult{PublishResult: res}}); errors.Is(serr, errSlowConsumer) {
					return serr
				}
				return err
			}
		}
		return stream.send(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_PublishResult{PublishResult: res}})
	case *fedv1.SyncRequest_PublishBundle:
		res := &fedv1.PublishResult{Nonce: msg.PublishBundle.GetNonce()}
		idx, err := y.publishBundle(ctx, cluster, msg.PublishBundle.GetBundle())
		res.Revision = idx
		if err != nil {
			st := status.Convert(err)
			res.ErrorCode, res.Error = st.Code().String(), st.Message()
		}
		return stream.send(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_PublishResult{PublishResult: res}})
	case *fedv1.SyncRequest_Ack:
		if err := validateAck(msg.Ack); err != nil {
			return err
		}
		rec.acks.add(msg.Ack.GetBundles())
		return nil
	case *fedv1.SyncRequest_GatewayPolicies:
		if err := checkGatewayPolicies(msg.GatewayPolicies); err != nil {
			return err
		}
		rec.gwPolicies.add(msg.GatewayPolicies)
		return nil
	case *fedv1.SyncRequest_Traffic:
		if err := checkTrafficSummary(msg.Traffic); err != nil {
			return err
		}
		s.recordTraffic(rec.stream, cluster, msg.Traffic)
		return nil
	case *fedv1.SyncRequest_Nack:
		s.log.Warn("agent rejected a delta", "cluster", cluster, "revision", msg.Nack.GetRevision(), "error", msg.Nack.GetError())
		return nil
	case *fedv1.SyncRequest_Hello:
		return invalidArg("hello", "sent twice on one stream")
	}
	return invalidArg("msg", "empty or unknown message")
}

func (y *syncService) publish(ctx context.Context, cluster string, p *fedv1.PublishExports) (uint64, error) {
	if n := len(p.GetUpserts()) + len(p.GetDeletes()); n > MaxExportsPerPublish {
		return 0, invalidArg("publish", "%d changes, at most %d per message", n, MaxExportsPerPublish)
	}
	name, err := federation.ParseClusterName(cluster) // from the stream's certificate
	if err != nil {
		return 0, status.Errorf(codes.PermissionDenied, "cluster %q: %v", cluster, err)
	}
	upserts := make([]federation.ServiceKey, len(p.GetUpserts()))
	for i, svc := range p.GetUpserts() {
		if err := validateExport(fmt.Sprintf("publish.upserts[%d]", i), svc); err != nil {
			return 0, err
		}
		upserts[i], _ = state.ServiceKeyOf(svc) // validateExport checked it
	}
	deletes := make([]federation.ServiceKey, len(p.GetDeletes()))
	for i, key := range p.GetDeletes() {
		if deletes[i], err = federation.ParseServiceKey(key); err != nil {
			return 0, fieldErr(fmt.Sprintf("publish.deletes[%d]", i), err)
		}
	}
	if err := checkExportQuota(y.s.fsm.Store().Read(), name, p.GetUpserts(), upserts, deletes); err != nil {
		return 0, err
	}
	return y.s.apply(ctx, fsm.PublishExportsType, &hubpb.CmdPublishExports{
		Cluster: cluster, Upserts: p.GetUpserts(), Deletes: p.GetDeletes(),
	})
}

// checkExportQuota refuses, without a Raft write, a publish that would take
// the cluster's exports above fsm.MaxExportBytesPerCluster in this server's
// view (the FSM checks again, authoritatively). A cluster above the quota
// may still shrink. upsertKeys[i] is the key of upserts[i].
func checkExportQuota(view *state.ReadTxn, cluster federation.ClusterName, upserts []*fedv1.ExportedService, upsertKeys, deletes []federation.ServiceKey) error {
	before := int64(view.ExportBytes(cluster))
	after := before
	sizeOf := func(key federation.ServiceKey) int64 {
		if old := view.Export(state.ExportID{Cluster: cluster, Service: key}); old != nil {
			return int64(proto.Size(old.GetService()))
		}
		return 0
	}
	for _, key := range deletes {
		after -= sizeOf(key)
	}
	for i, svc := range upserts {
		after += int64(proto.Size(svc)) - sizeOf(upsertKeys[i])
	}
	if after > fsm.MaxExportBytesPerCluster && after > before {
		return status.Errorf(codes.ResourceExhausted, "publish: cluster %q would hold %d bytes of exported services, at most %d (MaxExportBytesPerCluster)", cluster, after, fsm.MaxExportBytesPerCluster)
	}
	return nil
}

func (y *syncService) publishBundle(ctx context.Context, cluster string, b *fedv1.TrustBundle) (uint64, error) {
	if b == nil {
		return 0, invalidArg("publish_bundle.bundle", "required")
	}
	if _, err := validateBundle("publish_bundle.bundle", b); err != nil {
		return 0, err
	}
	return y.s.apply(ctx, fsm.PutBundleType, &hubpb.CmdPutBundle{Cluster: cluster, Bundle: b})
}

// sendDelta sends d, split into messages of at most MaxDeltaRecords records.
// Only the last message carries the revision, so a receiver that applies
// messages in order never records a revision it has not fully received.
func (y *syncService) sendDelta(stream *syncSender, d *state.Delta) error {
	msgs := splitDelta(d)
	for _, m := range msgs {
		if err := stream.send(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_Delta{Delta: m}}); err != nil {
			return err
		}
		y.s.metrics.sends.Inc()
	}
	return nil
}

// splitDelta splits d into messages of at most MaxDeltaRecords records and
// MaxDeltaBytes encoded bytes.
func splitDelta(d *state.Delta) []*fedv1.SyncDelta {
	var out []*fedv1.SyncDelta
	cur := &fedv1.SyncDelta{Reset_: d.Reset}
	// Room for the revision and reset fields the message carries too.
	const budget = MaxDeltaBytes - 32
	n, size := 0, 0
	flush := func() {
		out = append(out, cur)
		cur = &fedv1.SyncDelta{}
		n, size = 0, 0
	}
	// add makes room for one record of the given encoded size (field tag
	// and length prefix included) before it is appended.
	add := func(recordSize int) {
		sz := 1 + protowire.SizeBytes(recordSize)
		if n > 0 && (n >= MaxDeltaRecords || size+sz > budget) {
			flush()
		}
		n++
		size += sz
	}
	for _, c := range d.Clusters {
		c = streamedCluster(c)
		add(proto.Size(c))
		cur.Clusters = append(cur.Clusters, c)
	}
	for _, e := range d.Exports {
		add(proto.Size(e))
		cur.Exports = append(cur.Exports, e)
	}
	for _, b := range d.Bundles {
		add(proto.Size(b.GetBundle()))
		cur.Bundles = append(cur.Bundles, b.GetBundle())
	}
	for _, p := range d.Policies {
		add(proto.Size(p))
		cur.Policies = append(cur.Policies, p)
	}
	for _, k := range d.Removed[state.TableClusters] {
		add(len(k))
		cur.RemovedClusters = append(cur.RemovedClusters, k)
	}
	for _, id := range d.RemovedExports {
		ref := &fedv1.ExportRef{Cluster: id.Cluster.String(), Service: id.Service.String()}
		add(proto.Size(ref))
		cur.RemovedExports = append(cur.RemovedExports, ref)
	}
	for _, k := range d.Removed[state.TableBundles] {
		add(len(k))
		cur.RemovedBundles = append(cur.RemovedBundles, k)
	}
	for _, k := range d.Removed[state.TablePolicies] {
		add(len(k))
		cur.RemovedPolicies = append(cur.RemovedPolicies, k)
	}
	if n > 0 || len(out) == 0 {
		flush()
	}
	out[len(out)-1].Revision = d.Revision
	return out
}
