package hub

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The event stream (GET /ui/api/events): server-sent events named for the
// views, each the view's JSON, sent at connect and when it changes (at
// most every UIRefresh), "timeline" events of one timeline event each,
// and a comment every UIHeartbeat. The engine's loop fans the same bytes
// out to every stream without blocking: each stream has a buffer of
// uiStreamBuffer frames, and a stream whose buffer is full (its browser
// does not read) is dropped; a write that blocks longer than
// uiWriteTimeout ends the stream too.

// Bounds of the event streams.
const (
	// MaxUIStreams bounds the event streams open on one server; more are
	// refused with 503.
	MaxUIStreams = 100
	// UIHeartbeat is how often an idle stream carries a comment.
	UIHeartbeat    = 15 * time.Second
	uiStreamBuffer = 16
	uiWriteTimeout = 10 * time.Second
)

// uiStream is one open event stream.
type uiStream struct {
	frames chan []byte
	gone   chan struct{} // closed when the stream is dropped
}

// uiStreams is the set of open streams.
type uiStreams struct {
	max     int
	open    prometheus.Gauge
	dropped prometheus.Counter

	mu  sync.Mutex
	set map[*uiStream]struct{}
}

func newUIStreams(max int, reg prometheus.Registerer) *uiStreams {
	u := &uiStreams{max: max, set: map[*uiStream]struct{}{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_hub_ui_streams", Help: "Open web UI event streams on this server."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_hub_ui_streams_dropped_total",
			Help: "Web UI event streams dropped because the browser did not read."}),
	}
	reg.MustRegister(u.open, u.dropped)
	return u
}

// subscribe opens a stream, or refuses with errTooManyStreams.
func (u *uiStreams) subscribe() (*uiStream, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.set) >= u.max {
		return nil, errTooManyStreams
	}
	st := &uiStream{frames: make(chan []byte, uiStreamBuffer), gone: make(chan struct{})}
	u.set[st] = struct{}{}
	u.open.Set(float64(len(u.set)))
	return st, nil
}

// unsubscribe closes st (its handler returned).
func (u *uiStreams) unsubscribe(st *uiStream) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.removeLocked(st)
}

func (u *uiStreams) removeLocked(st *uiStream) {
	if _, ok := u.set[st]; !ok {
		return
	}
	delete(u.set, st)
	close(st.gone)
	u.open.Set(float64(len(u.set)))
}

func (u *uiStreams) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.set)
}

// broadcast queues frame on every stream without waiting; a stream whose
// buffer is full is dropped.
func (u *uiStreams) broadcast(frame []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for st := range u.set {
		select {
		case st.frames <- frame:
		default:
			u.removeLocked(st)
			u.dropped.Inc()
		}
	}
}

// closeAll drops every stream (the server stops).
func (u *uiStreams) closeAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for st := range u.set {
		u.removeLocked(st)
	}
}

// serveEvents serves GET /ui/api/events.
func (u *uiEngine) serveEvents(w http.ResponseWriter, r *http.Request) {
	st, err := u.streams.subscribe()
	if err != nil {
		uiWriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	defer u.streams.unsubscribe(st)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(uiWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The views as they are now; a change between this and the subscription
	// is sent again, never lost.
	for _, name := range uiViews {
		if !write(sseFrame(name, u.view(name))) {
			return
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-st.gone:
			return
		case f := <-st.frames:
			if !write(f) {
				return
			}
		}
	}
}
