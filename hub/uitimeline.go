package hub

import (
	"slices"
	"sync"
	"time"

	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// The web UI's timeline: events each server derives from what it sees,
// kept in memory in a bounded ring per server (a restarted server starts
// empty; servers do not replicate it). State events (join, removal,
// connect, disconnect, rotation) every server derives alike from the
// replicated state (uiObserver); traffic events (failover, ejection) only
// the server holding the reporting agent's stream, so a server's UI merges
// in those of the others (Internal.PeerView) when it reads them.

// Timeline event kinds.
const (
	timelineFailover   = "failover"
	timelineEjection   = "ejection"
	timelineJoin       = "join"
	timelineRemoval    = "removal"
	timelineRotation   = "rotation"
	timelineDisconnect = "disconnect"
	timelineConnect    = "connect"
)

// trafficKinds are the kinds only the stream's server derives.
var trafficKinds = []string{timelineFailover, timelineEjection}

// MaxTimelineEvents bounds each server's timeline.
const MaxTimelineEvents = 200

type eventKey struct {
	server string
	seq    uint64
}

// timeline is a server's ring of events, newest kept. Safe for
// concurrent use.
type timeline struct {
	server string
	max    int

	mu     sync.Mutex
	seq    uint64
	events []*hubpb.TimelineEvent // oldest first
	keys   map[eventKey]bool
	// fresh are the events added since takeFresh last ran, oldest first.
	fresh []*hubpb.TimelineEvent
	// notify is signalled when an event is added.
	notify chan struct{}
}

func newTimeline(server string, max int) *timeline {
	return &timeline{server: server, max: max, keys: map[eventKey]bool{}, notify: make(chan struct{}, 1)}
}

// addLocal records an event this server derived.
func (t *timeline) addLocal(at time.Time, kind, cluster, detail string) {
	t.mu.Lock()
	t.seq++
	ev := &hubpb.TimelineEvent{TimeMs: at.UnixMilli(), Kind: kind, Cluster: cluster, Detail: detail, Server: t.server, Seq: t.seq}
	t.insertLocked(ev)
	t.mu.Unlock()
}

// merge records events another server derived; ones already held, or
// older than everything a full ring holds, are ignored.
func (t *timeline) merge(evs []*hubpb.TimelineEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range evs {
		if ev.GetServer() == t.server || t.keys[eventKey{ev.GetServer(), ev.GetSeq()}] {
			continue
		}
		t.insertLocked(ev)
	}
}

func (t *timeline) insertLocked(ev *hubpb.TimelineEvent) {
	if len(t.events) >= t.max && ev.GetTimeMs() < t.events[0].GetTimeMs() {
		return
	}
	i, _ := slices.BinarySearchFunc(t.events, ev.GetTimeMs(), func(e *hubpb.TimelineEvent, ms int64) int {
		switch {
		case e.GetTimeMs() <= ms:
			return -1 // equal times: after the ones held
		default:
			return 1
		}
	})
	t.events = slices.Insert(t.events, i, ev)
	t.keys[eventKey{ev.GetServer(), ev.GetSeq()}] = true
	for len(t.events) > t.max {
		delete(t.keys, eventKey{t.events[0].GetServer(), t.events[0].GetSeq()})
		t.events = t.events[1:]
	}
	if len(t.fresh) < t.max {
		t.fresh = append(t.fresh, ev)
	}
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// recent returns the events held, newest first.
func (t *timeline) recent() []*hubpb.TimelineEvent {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Clone(t.events)
	slices.Reverse(out)
	return out
}

// own returns this server's events of the given kinds, oldest first.
func (t *timeline) own(kinds []string) []*hubpb.TimelineEvent {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*hubpb.TimelineEvent
	for _, e := range t.events {
		if e.GetServer() == t.server && slices.Contains(kinds, e.GetKind()) {
			out = append(out, e)
		}
	}
	return out
}

// takeFresh returns the events added since the last call, oldest first.
func (t *timeline) takeFresh() []*hubpb.TimelineEvent {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.fresh
	t.fresh = nil
	return f
}
