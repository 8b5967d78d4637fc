package hub

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// Traffic summaries (docs/architecture.md, "Web UI"). Each agent replica
// sends, on its Sync stream, a TrafficSummary every TrafficInterval: its
// gateway replicas' egress per destination cluster over the interval. The
// server holding the stream keeps the latest one per stream in memory
// (trafficStore), never through Raft, and derives failover and ejection
// events from it. Another server's web UI asks for them (Internal.PeerView)
// when it draws the topology; a summary dies with its stream or its
// server, and the next one, on whichever server, replaces it.

// Bounds of a TrafficSummary.
const (
	MaxTrafficLinks    = fsm.MaxClusters
	MaxTrafficGateways = 64
	maxTrafficInterval = time.Hour
	maxInstanceLength  = 253
)

// trafficStale: a summary older than this many of its intervals is no
// longer shown (its agent stopped sending).
const trafficStale = 3

// checkTrafficSummary validates a TrafficSummary as it arrives.
func checkTrafficSummary(t *fedv1.TrafficSummary) error {
	if ms := t.GetIntervalMs(); ms == 0 || time.Duration(ms)*time.Millisecond > maxTrafficInterval {
		return invalidArg("traffic.interval_ms", "%d must be in 1..%d", ms, maxTrafficInterval.Milliseconds())
	}
	if n := len(t.GetLinks()); n > MaxTrafficLinks {
		return invalidArg("traffic.links", "%d entries, at most %d", n, MaxTrafficLinks)
	}
	seen := map[string]bool{}
	for i, l := range t.GetLinks() {
		field := fmt.Sprintf("traffic.links[%d]", i)
		if _, err := federation.ParseClusterName(l.GetCluster()); err != nil {
			return fieldErr(field+".cluster", err)
		}
		if seen[l.GetCluster()] {
			return invalidArg(field+".cluster", "%q appears twice", l.GetCluster())
		}
		seen[l.GetCluster()] = true
		if l.GetErrors() > l.GetRequests() {
			return invalidArg(field+".errors", "%d exceeds requests %d", l.GetErrors(), l.GetRequests())
		}
		if p := l.GetP99Ms(); math.IsNaN(p) || p < 0 || p > maxTrafficInterval.Seconds()*1000 {
			return invalidArg(field+".p99_ms", "%v must be in 0..%d", p, maxTrafficInterval.Milliseconds())
		}
	}
	if n := len(t.GetGateways()); n > MaxTrafficGateways {
		return invalidArg("traffic.gateways", "%d entries, at most %d", n, MaxTrafficGateways)
	}
	for i, g := range t.GetGateways() {
		if n := len(g.GetInstance()); n == 0 || n > maxInstanceLength {
			return invalidArg(fmt.Sprintf("traffic.gateways[%d].instance", i), "%d bytes, want 1 to %d", n, maxInstanceLength)
		}
	}
	return nil
}

// trafficStore holds the latest traffic summary of each Sync stream of
// this server. Sync handlers put and drop; the UI reads.
type trafficStore struct {
	mu   sync.Mutex
	next uint64
	held map[uint64]*hubpb.HeldTraffic
}

func newTrafficStore() *trafficStore {
	return &trafficStore{held: map[uint64]*hubpb.HeldTraffic{}}
}

// open returns an ID for a new stream of cluster.
func (t *trafficStore) open() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	return t.next
}

// put keeps sum as stream's latest.
func (t *trafficStore) put(stream uint64, cluster string, sum *fedv1.TrafficSummary, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.held[stream] = &hubpb.HeldTraffic{Cluster: cluster, Stream: stream, ReceivedMs: now.UnixMilli(), Summary: sum}
}

// drop forgets stream's summary (the stream ended).
func (t *trafficStore) drop(stream uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.held, stream)
}

// snapshot returns the summaries held, by stream. The messages are
// shared: callers must not modify them.
func (t *trafficStore) snapshot() []*hubpb.HeldTraffic {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*hubpb.HeldTraffic, 0, len(t.held))
	for _, h := range t.held {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b *hubpb.HeldTraffic) int {
		if a.GetStream() < b.GetStream() {
			return -1
		}
		if a.GetStream() > b.GetStream() {
			return 1
		}
		return 0
	})
	return out
}

// recordTraffic keeps a validated summary from cluster's stream and puts
// its failovers and ejections on the timeline.
func (s *Server) recordTraffic(stream uint64, cluster string, sum *fedv1.TrafficSummary) {
	now := time.Now()
	s.traffic.put(stream, cluster, sum, now)
	interval := time.Duration(sum.GetIntervalMs()) * time.Millisecond
	for _, l := range sum.GetLinks() {
		if n := l.GetFailovers(); n > 0 {
			s.timeline.addLocal(now, timelineFailover, l.GetCluster(),
				fmt.Sprintf("%s's gateways failed over away from %s %d times in %v", cluster, l.GetCluster(), n, interval))
		}
		if n := l.GetEjections(); n > 0 {
			s.timeline.addLocal(now, timelineEjection, l.GetCluster(),
				fmt.Sprintf("%s's gateways ejected %s %d times in %v (outlier detection)", cluster, l.GetCluster(), n, interval))
		}
	}
}

// PeerView serves another server's web UI.
func (i *internalService) PeerView(context.Context, *hubpb.PeerViewRequest) (*hubpb.PeerViewResponse, error) {
	s := i.s
	if s.raft == nil {
		return nil, status.Error(codes.Unavailable, "hub: shutting down")
	}
	return &hubpb.PeerViewResponse{
		Traffic: s.traffic.snapshot(), Events: s.timeline.own(trafficKinds),
		AppliedIndex: s.fsm.AppliedIndex(), State: stateName(s.raft.State()), Streams: s.streams.Load(),
	}, nil
}

// peerViewTimeout bounds one PeerView call.
const peerViewTimeout = 500 * time.Millisecond

// peerView is one server's PeerView answer, or why there is none.
type peerView struct {
	server string
	resp   *hubpb.PeerViewResponse
	err    error
}

// fetchPeerViews asks every other live server for its PeerView, in
// parallel, each within peerViewTimeout; this server's own is made
// locally. A server that does not know PeerView (older) or fails is
// reported with its error.
func (s *Server) fetchPeerViews(ctx context.Context) []peerView {
	self, _ := (&internalService{s: s}).PeerView(ctx, nil)
	out := []peerView{{server: s.cfg.Name, resp: self}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, m := range s.members.snapshot() {
		if m.Name == s.cfg.Name || m.Health != "alive" || m.Meta.GRPC == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pv := peerView{server: m.Name}
			conn, err := s.peers.get(m.Meta.GRPC)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, peerViewTimeout)
				pv.resp, err = hubpb.NewInternalClient(conn).PeerView(cctx, &hubpb.PeerViewRequest{})
				cancel()
			}
			pv.err = err
			mu.Lock()
			out = append(out, pv)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out[1:], func(a, b peerView) int {
		switch {
		case a.server < b.server:
			return -1
		case a.server > b.server:
			return 1
		}
		return 0
	})
	return out
}
