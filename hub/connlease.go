package hub

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// Connection status is a lease, not a record field. Each server counts the
// Sync streams it holds per cluster (connTracker) and states them all in one
// RenewConnections command (leaseLoop): at once when the set changes, and
// every ConnectionLease/3 while it is not empty. The leases live in the
// non-streamed connections table, so a connect or disconnect is not a
// change any agent receives, and a crashed server's leases lapse by
// themselves within ConnectionLease.

// connTracker counts this server's open Sync streams per cluster. Sync
// handlers call hold; leaseLoop reads the set.
type connTracker struct {
	mu   sync.Mutex
	held map[string]int
	kick chan struct{} // a cluster's first stream opened or its last closed
}

func newConnTracker() *connTracker {
	return &connTracker{held: map[string]int{}, kick: make(chan struct{}, 1)}
}

// hold records an open stream of cluster until release is called.
func (c *connTracker) hold(cluster string) (release func()) {
	c.mu.Lock()
	c.held[cluster]++
	first := c.held[cluster] == 1
	c.mu.Unlock()
	if first {
		c.signal()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.held[cluster]--
			last := c.held[cluster] == 0
			if last {
				delete(c.held, cluster)
			}
			c.mu.Unlock()
			if last {
				c.signal()
			}
		})
	}
}

func (c *connTracker) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// clusters returns the clusters with an open stream, sorted.
func (c *connTracker) clusters() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.held))
}

// leaseWriter keeps one server's connection leases in the replicated
// state: it writes the set of clusters it holds streams for at once when
// that set changes (or the store disagrees with it, as after a restart),
// every lease/3 while the set is not empty, and never while the server
// holds nothing and the store agrees. A failed write is retried sooner.
type leaseWriter struct {
	lease time.Duration
	conns *connTracker
	// stored returns the clusters the store says this server holds leases
	// for, sorted.
	stored func() []string
	// renew writes the leases of clusters as of now.
	renew func(now time.Time, clusters []string) error
	log   *slog.Logger
}

func (w *leaseWriter) run(stop <-chan struct{}) {
	var (
		last     []string  // what the last successful write stated
		lastAt   time.Time // and when
		written  bool
		failures int
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-w.conns.kick:
			timer.Stop()
		case <-timer.C:
		}
		want := w.conns.clusters()
		now := time.Now()
		due := false
		wait := w.lease / 3
		switch {
		case !slices.Equal(want, w.stored()) && (!written || !slices.Equal(want, last)):
			due = true // the set changed, or the store disagrees (a restart)
		case len(want) == 0:
			// Nothing held and nothing stored: no writes until a stream opens.
		case !now.Before(lastAt.Add(w.lease / 3)):
			due = true
		default:
			wait = lastAt.Add(w.lease / 3).Sub(now)
		}
		if !due {
			timer.Reset(wait)
			continue
		}
		if err := w.renew(now, want); err != nil {
			failures++
			wait := min(50*time.Millisecond<<min(failures, 8), w.lease/3)
			w.log.Debug("connection leases not renewed", "clusters", len(want), "retry", wait, "err", err)
			timer.Reset(wait)
			continue
		}
		last, lastAt, written, failures = want, now, true, 0
		timer.Reset(w.lease / 3)
	}
}

// leaseLoop keeps this server's connection leases in the replicated state.
func (s *Server) leaseLoop() {
	w := &leaseWriter{
		lease: s.cfg.ConnectionLease, conns: s.conns, log: s.log,
		stored: func() []string {
			var out []string
			for _, c := range s.fsm.Store().Read().ConnectionsBy(s.cfg.Name) {
				if fsm.ConnectionHeld(c) {
					out = append(out, c.GetCluster())
				}
			}
			slices.Sort(out)
			return out
		},
		renew: func(now time.Time, clusters []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
			defer cancel()
			_, err := s.apply(ctx, fsm.RenewConnectionsType, &hubpb.CmdRenewConnections{
				Server: s.cfg.Name, NowMs: now.UnixMilli(), LeaseMs: s.cfg.ConnectionLease.Milliseconds(), Clusters: clusters,
			})
			return err
		},
	}
	w.run(s.stopCh)
}

// withConnection returns a copy of c whose status and last_seen_ms say
// whether some server holds an unexpired lease on its connection, as of
// now on this server's clock (so a lease is read as expired by the skew
// between the renewing and the reading server's clocks early or late).
func withConnection(r *state.ReadTxn, c *fedv1.ClusterRecord, now time.Time) *fedv1.ClusterRecord {
	c = proto.Clone(c).(*fedv1.ClusterRecord)
	c.Status = "disconnected"
	for _, cc := range r.ConnectionsOf(c.GetName()) {
		c.LastSeenMs = max(c.GetLastSeenMs(), cc.GetRenewedMs())
		if cc.GetExpiresMs() > now.UnixMilli() {
			c.Status = "connected"
		}
	}
	return c
}

// streamedCluster is c as agents receive it: without the connection
// status, which is for operators (Admin) only.
func streamedCluster(c *fedv1.ClusterRecord) *fedv1.ClusterRecord {
	if c.GetStatus() == "" && c.GetLastSeenMs() == 0 {
		return c
	}
	c = proto.Clone(c).(*fedv1.ClusterRecord)
	c.Status, c.LastSeenMs = "", 0
	return c
}
