package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// A CA rotation waits for the federation: the rotating cluster's agent
// switches to its new root once every member that counts has acknowledged
// the bundle that added it. The pieces here: Acks recorded through Raft
// (only increases, AckBundles), who counts (memberPresence), and the
// answers to Sync.RotationStatus and Admin.TrustStatus.

// RotationSeenWindow is how recently a member that is not connected must
// have been seen to count for a CA rotation: such a member holds a
// rotation up until it comes back and acknowledges the new bundle (or the
// rotating cluster's upper bound passes); one not seen for longer does not.
const RotationSeenWindow = 15 * time.Minute

// maxAckBundles bounds the entries of one Ack: one per trust domain an
// agent can hold.
const maxAckBundles = fsm.MaxClusters + fsm.MaxFederations

// ackRetry is how long a stream's ack recorder waits after a failed write
// (no leader) before it tries again.
const ackRetry = time.Second

// presence is what the hub knows of a member's connection.
type presence struct {
	status     string
	lastSeenMs int64
	// counts: the member's acknowledgements are waited for.
	counts bool
}

// memberPresence is the one place a CA rotation reads connection status:
// a member counts if some hub server holds an unexpired lease on its Sync
// stream, or its last lease renewal was within RotationSeenWindow of now.
func memberPresence(view *state.ReadTxn, c *fedv1.ClusterRecord, now time.Time) presence {
	c = withConnection(view, c, now)
	p := presence{status: c.GetStatus(), lastSeenMs: c.GetLastSeenMs()}
	p.counts = p.status == "connected" ||
		(p.lastSeenMs > 0 && now.Sub(time.UnixMilli(p.lastSeenMs)) <= RotationSeenWindow)
	return p
}

// bundleHolders lists every member other than owner with the sequence of
// owner's bundle it acknowledged, whether it holds seq, and whether it
// counts; ready is true when every counting member holds seq.
func bundleHolders(view *state.ReadTxn, owner *fedv1.ClusterRecord, seq uint64, now time.Time) (members []*fedv1.MemberBundleStatus, ready bool) {
	acks := view.BundleAcksFor(owner.GetTrustDomain())
	ready = true
	for _, c := range view.Clusters() { // sorted by name
		if c.GetName() == owner.GetName() {
			continue
		}
		p := memberPresence(view, c, now)
		applied := acks[c.GetName()].GetSequenceNumber()
		m := &fedv1.MemberBundleStatus{
			Cluster: c.GetName(), AppliedSequence: applied, Counted: p.counts,
			Holds: seq > 0 && applied >= seq, Status: p.status, LastSeenMs: p.lastSeenMs,
		}
		if m.Counted && !m.Holds {
			ready = false
		}
		members = append(members, m)
	}
	return members, ready
}

// RotationStatus answers the caller's agent: does every member that counts
// hold its bundle of the given sequence?
func (y *syncService) RotationStatus(ctx context.Context, req *fedv1.RotationStatusRequest) (*fedv1.RotationStatusResponse, error) {
	id, _ := callerIdentity(ctx)
	view, err := y.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkMember(view, id); err != nil {
		return nil, err
	}
	cl := view.Cluster(id.name)
	b := view.Bundle(cl.GetTrustDomain())
	if b == nil || b.GetCluster() != id.name {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %q: the hub holds no bundle for trust domain %q", id.name, cl.GetTrustDomain())
	}
	published := b.GetBundle().GetSequenceNumber()
	seq := req.GetSequenceNumber()
	if seq == 0 {
		seq = published
	}
	members, ready := bundleHolders(view, cl, seq, time.Now())
	return &fedv1.RotationStatusResponse{
		TrustDomain: cl.GetTrustDomain(), SequenceNumber: seq, PublishedSequence: published,
		Members: members, Ready: ready && published >= seq,
	}, nil
}

// TrustStatus lists each member cluster's bundle and who holds it.
func (a *adminService) TrustStatus(ctx context.Context, _ *fedv1.TrustStatusRequest) (*fedv1.TrustStatusResponse, error) {
	view, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	resp := &fedv1.TrustStatusResponse{Revision: view.Revision()}
	for _, c := range view.Clusters() {
		st := &fedv1.ClusterTrustStatus{Cluster: c.GetName(), TrustDomain: c.GetTrustDomain(), CaRotation: c.GetCaRotation()}
		if b := view.Bundle(c.GetTrustDomain()); b != nil && b.GetCluster() == c.GetName() {
			st.SequenceNumber = b.GetBundle().GetSequenceNumber()
			st.Roots = uint32(len(b.GetBundle().GetX509Authorities()))
		}
		st.Members, _ = bundleHolders(view, c, st.SequenceNumber, now)
		resp.Clusters = append(resp.Clusters, st)
	}
	return resp, nil
}

// validateAck checks an Ack's bundle list.
func validateAck(a *fedv1.Ack) error {
	if n := len(a.GetBundles()); n > maxAckBundles {
		return invalidArg("ack.bundles", "%d entries, at most %d", n, maxAckBundles)
	}
	for i, b := range a.GetBundles() {
		if _, err := federation.ParseTrustDomain(b.GetTrustDomain()); err != nil {
			return fieldErr(fmt.Sprintf("ack.bundles[%d]", i), err)
		}
	}
	return nil
}

// ackRecorder records what one stream's Acks say, off the stream's
// goroutine: add merges an Ack's sequences (keeping the highest), and run
// writes the ones that increase the hub's record, one AckBundles command
// at a time, retrying a failed write while the stream lasts.
type ackRecorder struct {
	s       *Server
	cluster string
	kick    chan struct{}

	mu      sync.Mutex
	pending map[string]uint64
}

func newAckRecorder(s *Server, cluster string) *ackRecorder {
	return &ackRecorder{s: s, cluster: cluster, kick: make(chan struct{}, 1), pending: map[string]uint64{}}
}

// add is called by the stream's goroutine for each Ack.
func (r *ackRecorder) add(bundles []*fedv1.BundleSequence) {
	if len(bundles) == 0 {
		return
	}
	r.mu.Lock()
	for _, b := range bundles {
		r.pending[b.GetTrustDomain()] = max(r.pending[b.GetTrustDomain()], b.GetSequenceNumber())
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// take returns the pending sequences that would change the hub's record,
// as this server sees it, and forgets the rest.
func (r *ackRecorder) take() []*fedv1.BundleSequence {
	view := r.s.fsm.Store().Read()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*fedv1.BundleSequence
	for td, seq := range r.pending {
		b := view.Bundle(td)
		if b == nil || b.GetCluster() == "" || b.GetCluster() == r.cluster {
			continue
		}
		seq = min(seq, b.GetBundle().GetSequenceNumber())
		if seq > view.BundleAck(r.cluster, td).GetSequenceNumber() {
			out = append(out, &fedv1.BundleSequence{TrustDomain: td, SequenceNumber: seq})
		}
	}
	clear(r.pending)
	return out
}

func (r *ackRecorder) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		bundles := r.take()
		if len(bundles) == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.s.cfg.ApplyTimeout)
		_, err := r.s.apply(actx, fsm.AckBundlesType, &hubpb.CmdAckBundles{Cluster: r.cluster, Bundles: bundles, NowMs: time.Now().UnixMilli()})
		cancel()
		switch {
		case err == nil:
		case status.Code(err) == codes.FailedPrecondition, status.Code(err) == codes.NotFound:
			// A server not yet upgraded to protocol 4 (rolling upgrade),
			// or a removed cluster: recording cannot succeed now.
			r.s.log.Debug("bundle acks not recorded", "cluster", r.cluster, "err", err)
		case errors.Is(err, context.Canceled) || ctx.Err() != nil:
			return
		default:
			r.s.log.Debug("bundle acks not recorded; retrying", "cluster", r.cluster, "err", err)
			r.add(bundles)
			t := time.NewTimer(ackRetry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}
