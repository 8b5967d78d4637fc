package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/hub/state"
)

// uiEngine computes the web UI's views and feeds the event streams. One
// goroutine (run) wakes every UIRefresh: it derives timeline events from
// the state (always: cheap, and the timeline must not miss what happens
// while nobody watches) and, while streams are open, recomputes the
// views once, compares each with what it sent last, and fans the same
// bytes out to every stream. A GET of a view is served from the same
// cache, recomputed at most once per UIRefresh.
type uiEngine struct {
	s     *Server
	roots rootExpiries

	// mu guards the cache and the observer's state.
	mu         sync.Mutex
	computedAt time.Time
	views      map[string][]byte // by view name: the JSON served
	topoCore   []byte            // the topology without generatedAt
	started    time.Time         // when the engine was made: joins since are events
	prev       map[string]clusterObs
	removed    map[string]time.Time

	streams *uiStreams
}

// UIRefresh is how often the views are recomputed while the UI is in
// use, and the state watched for timeline events.
const UIRefresh = time.Second

// The views of the event stream and the JSON API.
const (
	viewTopology = "topology"
	viewServices = "services"
	viewTrust    = "trust"
	viewHub      = "hub"
)

var uiViews = []string{viewTopology, viewServices, viewTrust, viewHub}

// removedShown is how long the topology shows a removed cluster, and
// maxRemovedShown how many at most.
const (
	removedShown    = time.Hour
	maxRemovedShown = 100
)

// clusterObs is what the timeline watches of one cluster.
type clusterObs struct {
	connected  bool
	rotating   bool
	caRotation uint64
	bundleSeq  uint64
	joinedAt   time.Time
}

func newUIEngine(s *Server, reg prometheus.Registerer) *uiEngine {
	return &uiEngine{s: s, started: time.Now(), views: map[string][]byte{}, prev: map[string]clusterObs{}, removed: map[string]time.Time{},
		streams: newUIStreams(MaxUIStreams, reg)}
}

// run is the engine's loop, until stop.
func (u *uiEngine) run(stop <-chan struct{}) {
	tick := time.NewTicker(UIRefresh)
	defer tick.Stop()
	beat := time.NewTicker(UIHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-stop:
			u.streams.closeAll()
			return
		case <-beat.C:
			u.streams.broadcast([]byte(": heartbeat\n\n"))
			continue
		case <-tick.C:
		}
		now := time.Now()
		u.observe(now)
		if u.streams.count() == 0 {
			u.s.timeline.takeFresh() // nobody to tell
			continue
		}
		changed := u.refresh(now, true)
		for _, name := range uiViews {
			if b, ok := changed[name]; ok {
				u.streams.broadcast(sseFrame(name, b))
			}
		}
		for _, ev := range u.s.timeline.takeFresh() {
			b, err := json.Marshal(uiEventOf(ev))
			if err != nil {
				continue // a struct of strings always marshals
			}
			u.streams.broadcast(sseFrame("timeline", b))
		}
	}
}

// sseFrame is one server-sent event. JSON holds no newline, so one data
// line carries it.
func sseFrame(event string, data []byte) []byte {
	b := make([]byte, 0, len(event)+len(data)+16)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// view returns the JSON of a view, recomputing the views if they are
// older than UIRefresh.
func (u *uiEngine) view(name string) []byte {
	u.refresh(time.Now(), false)
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.views[name]
}

// refresh recomputes every view unless they are fresher than UIRefresh
// (force: recompute anyway, the loop's tick) and returns those whose JSON
// changed.
func (u *uiEngine) refresh(now time.Time, force bool) map[string][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !force && now.Sub(u.computedAt) < UIRefresh && len(u.views) == len(uiViews) {
		return nil
	}
	u.computedAt = now
	ctx, cancel := context.WithTimeout(context.Background(), 2*peerViewTimeout)
	defer cancel()
	peers := u.s.fetchPeerViews(ctx)
	for _, pv := range peers {
		u.s.timeline.merge(pv.resp.GetEvents())
	}
	r := u.s.fsm.Store().Read()
	removed := sortedKeys(u.removed)
	st, err := u.s.status()
	if err != nil {
		st = nil // shutting down: no servers to show
	}
	// generatedAt moves only when the topology does, so an unchanged
	// topology is not sent again.
	topo := topologyView(r, now, peers, removed)
	changed := map[string][]byte{}
	set := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			u.s.log.Error("ui: view not encoded", "view", name, "err", err)
			return
		}
		if string(b) != string(u.views[name]) {
			u.views[name] = b
			changed[name] = b
		}
	}
	if core, err := json.Marshal(topo); err == nil && string(core) != string(u.topoCore) {
		u.topoCore = core
		topo.GeneratedAt = rfc3339(now)
		set(viewTopology, topo)
	}
	set(viewServices, servicesView(r, now))
	set(viewTrust, trustView(r, now, &u.roots))
	set(viewHub, hubView(r, now, st, peers))
	return changed
}

// timelineJSON is GET /ui/api/timeline: this server's events and the
// other servers' traffic events, newest first.
func (u *uiEngine) timelineJSON() ([]byte, error) {
	u.refresh(time.Now(), false) // merges the other servers' events
	v := uiTimeline{Events: []uiEvent{}}
	for _, e := range u.s.timeline.recent() {
		v.Events = append(v.Events, uiEventOf(e))
	}
	return json.Marshal(v)
}

// observe derives timeline events from the state: clusters that joined or
// were removed, connected or disconnected (their connection leases), and
// CA rotations requested, started (the bundle holds a second root) and
// completed (one root again). A cluster first seen is a join only if it
// joined after the engine started: a server that restarts and replays its
// log does not report old joins again.
func (u *uiEngine) observe(now time.Time) {
	r := u.s.fsm.Store().Read()
	cur := observeClusters(r, now)
	u.mu.Lock()
	defer u.mu.Unlock()
	prev := u.prev
	u.prev = cur
	for n, at := range u.removed {
		if _, back := cur[n]; back || now.Sub(at) > removedShown {
			delete(u.removed, n)
		}
	}
	tl := u.s.timeline
	for _, n := range sortedKeys(cur) {
		c := cur[n]
		p, was := prev[n]
		if !was {
			if c.joinedAt.Before(u.started) {
				continue // the baseline, or the log replayed at start
			}
			at := c.joinedAt
			if at.IsZero() || at.After(now) {
				at = now
			}
			tl.addLocal(at, timelineJoin, n, n+" joined the federation")
			delete(u.removed, n)
			if c.connected {
				tl.addLocal(now, timelineConnect, n, n+"'s agent connected")
			}
			continue
		}
		switch {
		case c.connected && !p.connected:
			tl.addLocal(now, timelineConnect, n, n+"'s agent connected")
		case !c.connected && p.connected:
			tl.addLocal(now, timelineDisconnect, n, n+"'s agent disconnected: no hub server holds a live lease on its stream")
		}
		if c.caRotation > p.caRotation {
			tl.addLocal(now, timelineRotation, n, fmt.Sprintf("CA rotation %d requested (meshfed trust rotate)", c.caRotation))
		}
		switch {
		case c.rotating && !p.rotating:
			tl.addLocal(now, timelineRotation, n, fmt.Sprintf("CA rotation started: bundle sequence %d adds a new root", c.bundleSeq))
		case !c.rotating && p.rotating:
			tl.addLocal(now, timelineRotation, n, fmt.Sprintf("CA rotation completed: bundle sequence %d holds one root", c.bundleSeq))
		}
	}
	for _, n := range sortedKeys(prev) {
		if _, ok := cur[n]; !ok {
			tl.addLocal(now, timelineRemoval, n, n+" was removed from the federation")
			u.removed[n] = now
		}
	}
	for len(u.removed) > maxRemovedShown {
		oldest, at := "", now
		for n, t := range u.removed {
			if t.Before(at) {
				oldest, at = n, t
			}
		}
		delete(u.removed, oldest)
	}
}

// observeClusters is what the timeline watches of each member.
func observeClusters(r *state.ReadTxn, now time.Time) map[string]clusterObs {
	out := map[string]clusterObs{}
	for _, c := range r.Clusters() {
		o := clusterObs{connected: withConnection(r, c, now).GetStatus() == "connected", caRotation: c.GetCaRotation(),
			joinedAt: time.UnixMilli(c.GetJoinedAtMs())}
		if b := r.Bundle(c.GetTrustDomain()); b != nil && b.GetCluster() == c.GetName() {
			o.bundleSeq = b.GetBundle().GetSequenceNumber()
			o.rotating = len(b.GetBundle().GetX509Authorities()) > 1
		}
		out[c.GetName()] = o
	}
	return out
}

// errTooManyStreams: MaxUIStreams are open.
var errTooManyStreams = errors.New("hub: ui: too many open event streams")
