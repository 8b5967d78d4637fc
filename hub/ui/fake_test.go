package ui_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/hub/ui"
)

// The documents of the UI API (docs/ui.md), as the fake serves them.

type topologyDoc struct {
	GeneratedAt string       `json:"generatedAt"`
	Clusters    []clusterDoc `json:"clusters"`
	Links       []linkDoc    `json:"links"`
}

type clusterDoc struct {
	Name        string       `json:"name"`
	Region      string       `json:"region"`
	Zone        string       `json:"zone"`
	Connected   bool         `json:"connected"`
	LastContact string       `json:"lastContact"`
	Removed     bool         `json:"removed"`
	Gateways    []gatewayDoc `json:"gateways"`
	Exports     int          `json:"exports"`
}

type gatewayDoc struct {
	Instance string `json:"instance"`
	Up       bool   `json:"up"`
}

type linkDoc struct {
	From      string  `json:"from"`
	To        string  `json:"to"`
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"errorRate"`
	P99Ms     float64 `json:"p99Ms"`
	Health    string  `json:"health"`
}

type servicesDoc struct {
	Services []serviceDoc `json:"services"`
}

type serviceDoc struct {
	Service   string        `json:"service"`
	Exporters []exporterDoc `json:"exporters"`
	Importers []string      `json:"importers"`
	Policy    *policyDoc    `json:"policy"`
}

type exporterDoc struct {
	Cluster     string         `json:"cluster"`
	ReadyByZone map[string]int `json:"readyByZone"`
	Conflict    string         `json:"conflict"`
}

type policyDoc struct {
	Name        string           `json:"name"`
	Revision    int              `json:"revision"`
	Enforcement []enforcementDoc `json:"enforcement"`
}

type enforcementDoc struct {
	Cluster  string `json:"cluster"`
	Gateway  string `json:"gateway"`
	Revision int    `json:"revision"`
	Current  bool   `json:"current"`
}

type trustDoc struct {
	Domains []domainDoc `json:"domains"`
}

type domainDoc struct {
	TrustDomain    string       `json:"trustDomain"`
	Cluster        string       `json:"cluster"`
	BundleSequence int          `json:"bundleSequence"`
	RootExpiry     string       `json:"rootExpiry"`
	Rotation       *rotationDoc `json:"rotation"`
}

type rotationDoc struct {
	Phase string   `json:"phase"`
	Acks  []ackDoc `json:"acks"`
}

type ackDoc struct {
	Cluster string `json:"cluster"`
	Holds   bool   `json:"holds"`
}

type hubDoc struct {
	Servers  []serverDoc `json:"servers"`
	Revision int         `json:"revision"`
	Streams  int         `json:"streams"`
	Members  []memberDoc `json:"members"`
}

type serverDoc struct {
	ID        string `json:"id"`
	Address   string `json:"address"`
	Leader    bool   `json:"leader"`
	RaftIndex int    `json:"raftIndex"`
	State     string `json:"state"`
}

type memberDoc struct {
	Cluster     string `json:"cluster"`
	LastContact string `json:"lastContact"`
}

type timelineDoc struct {
	Events []eventDoc `json:"events"`
}

type eventDoc struct {
	Time    string `json:"time"`
	Kind    string `json:"kind"`
	Cluster string `json:"cluster"`
	Detail  string `json:"detail"`
}

// sseEvent is one event of the stream: its name and JSON data.
type sseEvent struct {
	name string
	data []byte
}

const (
	fakeToken  = "good-token"
	fakeCookie = "meshfed_ui"
)

// fakeHub serves the UI's assets (ui.Handler) behind the UI API's contract
// with canned documents a test changes: what the hub would serve for the
// three clusters of `meshfed dev`. Sessions work as the hub's do: a login
// URL sets the cookie; without it the API answers 401 JSON and pages a 401
// page.
type fakeHub struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	topology topologyDoc
	services servicesDoc
	trust    trustDoc
	hub      hubDoc
	timeline []eventDoc
	sessions map[string]bool
	streams  map[chan sseEvent]string // → its session
	rev      int
}

func newFakeHub(t testing.TB) *fakeHub {
	t.Helper()
	f := &fakeHub{t: t, sessions: map[string]bool{}, streams: map[chan sseEvent]string{}}
	f.seed(time.Now())
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, f.auth(ui.Handler()))
	mux.HandleFunc("GET /ui/login", f.login)
	for _, name := range []string{"topology", "services", "trust", "hub", "timeline"} {
		mux.Handle("GET /ui/api/"+name, f.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(f.doc(name))
		})))
	}
	mux.Handle("GET /ui/api/events", f.auth(http.HandlerFunc(f.events)))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.close)
	return f
}

func (f *fakeHub) close() {
	f.mu.Lock()
	for ch := range f.streams {
		close(ch)
		delete(f.streams, ch)
	}
	f.mu.Unlock()
	f.srv.Close()
}

func (f *fakeHub) loginURL() string { return f.srv.URL + "/ui/login?token=" + fakeToken }

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// seed fills the documents: east and west export default/reviews, central
// default/ratings, a policy on reviews with one gateway behind, a CA
// rotation in progress in west.
func (f *fakeHub) seed(now time.Time) {
	type c struct{ name, region, zone string }
	cs := []c{{"east", "us-east", "us-east-1a"}, {"west", "us-west", "us-west-1a"}, {"central", "eu-central", "eu-central-1a"}}
	f.topology = topologyDoc{GeneratedAt: rfc(now)}
	for _, x := range cs {
		f.topology.Clusters = append(f.topology.Clusters, clusterDoc{Name: x.name, Region: x.region, Zone: x.zone, Connected: true,
			LastContact: rfc(now.Add(-2 * time.Second)), Gateways: []gatewayDoc{{Instance: x.name + "-gw-0", Up: true}}, Exports: 1})
	}
	f.topology.Links = []linkDoc{
		{From: "central", To: "east", RPS: 12.5, ErrorRate: 0, P99Ms: 4.2, Health: "ok"},
		{From: "central", To: "west", RPS: 11.8, ErrorRate: 0.0004, P99Ms: 5.1, Health: "ok"},
		{From: "east", To: "central", RPS: 3, ErrorRate: 0, P99Ms: 2.9, Health: "ok"},
		{From: "west", To: "central", RPS: 2.4, ErrorRate: 0.04, P99Ms: 180, Health: "degraded"},
		{From: "east", To: "west", RPS: 0, Health: "idle"},
	}
	f.services = servicesDoc{Services: []serviceDoc{
		{Service: "default/reviews", Exporters: []exporterDoc{
			{Cluster: "east", ReadyByZone: map[string]int{"us-east-1a": 2}},
			{Cluster: "west", ReadyByZone: map[string]int{"us-west-1a": 1}},
		}, Importers: []string{"central", "east", "west"}, Policy: &policyDoc{Name: "reviews-failover", Revision: 14, Enforcement: []enforcementDoc{
			{Cluster: "central", Gateway: "central-gw-0", Revision: 14, Current: true},
			{Cluster: "east", Gateway: "east-gw-0", Revision: 14, Current: true},
			{Cluster: "west", Gateway: "west-gw-0", Revision: 12, Current: false},
		}}},
		{Service: "default/ratings", Exporters: []exporterDoc{
			{Cluster: "central", ReadyByZone: map[string]int{"eu-central-1a": 1}},
			{Cluster: "east", ReadyByZone: map[string]int{"us-east-1a": 0}, Conflict: "port 9090 is TCP here, HTTP in central"},
		}, Importers: []string{"east", "west"}},
	}}
	f.trust = trustDoc{Domains: []domainDoc{
		{TrustDomain: "central.mesh.local", Cluster: "central", BundleSequence: 3, RootExpiry: rfc(now.Add(300 * 24 * time.Hour))},
		{TrustDomain: "east.mesh.local", Cluster: "east", BundleSequence: 2, RootExpiry: rfc(now.Add(20 * 24 * time.Hour))},
		{TrustDomain: "west.mesh.local", Cluster: "west", BundleSequence: 5, RootExpiry: rfc(now.Add(200 * 24 * time.Hour)),
			Rotation: &rotationDoc{Phase: "distributing", Acks: []ackDoc{{Cluster: "central", Holds: true}, {Cluster: "east", Holds: false}, {Cluster: "west", Holds: true}}}},
		{TrustDomain: "partner.example", BundleSequence: 9, RootExpiry: rfc(now.Add(90 * 24 * time.Hour))},
	}}
	f.rev = 1042
	f.hub = hubDoc{Revision: f.rev, Streams: 3, Servers: []serverDoc{
		{ID: "hub-0", Address: "127.0.0.1:7401", Leader: true, RaftIndex: 1042, State: "leader"},
		{ID: "hub-1", Address: "127.0.0.1:7402", RaftIndex: 1042, State: "follower"},
		{ID: "hub-2", Address: "127.0.0.1:7403", RaftIndex: 1041, State: "follower"},
	}}
	for _, x := range cs {
		f.hub.Members = append(f.hub.Members, memberDoc{Cluster: x.name, LastContact: rfc(now.Add(-time.Second))})
	}
	for i, x := range cs {
		f.timeline = append([]eventDoc{{Time: rfc(now.Add(time.Duration(i-60) * time.Second)), Kind: "join", Cluster: x.name, Detail: x.name + " joined the federation"}}, f.timeline...)
	}
}

func (f *fakeHub) doc(name string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var v any
	switch name {
	case "topology":
		v = f.topology
	case "services":
		v = f.services
	case "trust":
		v = f.trust
	case "hub":
		v = f.hub
	case "timeline":
		v = timelineDoc{Events: f.timeline}
	}
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Errorf("fake hub: %v", err)
	}
	return b
}

func (f *fakeHub) authed(r *http.Request) (string, bool) {
	c, err := r.Cookie(fakeCookie)
	if err != nil {
		return "", false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return c.Value, f.sessions[c.Value]
}

func (f *fakeHub) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.authed(r); ok {
			next.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/ui/api/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error": "no session: run meshfed ui login"}`))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`<!doctype html><html lang="en"><title>meshfed: log in</title><main><h1>Log in</h1><p>Run <code>meshfed ui login</code> and open the URL it prints.</p></main></html>`))
	})
}

func (f *fakeHub) login(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("token") != fakeToken {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	id := fmt.Sprintf("s%d", len(f.sessions)+1)
	f.sessions[id] = true
	f.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: fakeCookie, Value: id, Path: "/ui/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (f *fakeHub) events(w http.ResponseWriter, r *http.Request) {
	session, _ := f.authed(r)
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "no flusher", http.StatusInternalServerError)
		return
	}
	ch := make(chan sseEvent, 64)
	f.mu.Lock()
	f.streams[ch] = session
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, ch)
		f.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	for _, name := range []string{"topology", "services", "trust", "hub"} {
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, f.doc(name))
	}
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, open := <-ch:
			if !open {
				return
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.data)
			fl.Flush()
		}
	}
}

// publish sends an event to every open stream.
func (f *fakeHub) publish(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Fatal(err)
	}
	for ch := range f.streams {
		select {
		case ch <- sseEvent{name, b}:
		default:
			f.t.Errorf("fake hub: a stream is full")
		}
	}
}

// failGateway makes cluster's gateways go down, as `meshfed dev fail
// --what gateway` does, and puts a failover on the timeline.
func (f *fakeHub) failGateway(cluster string) error { return f.setGateways(cluster, false) }

// healGateway brings them back.
func (f *fakeHub) healGateway(cluster string) error { return f.setGateways(cluster, true) }

func (f *fakeHub) setGateways(cluster string, up bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	found := false
	for i := range f.topology.Clusters {
		c := &f.topology.Clusters[i]
		if c.Name != cluster {
			continue
		}
		found = true
		for j := range c.Gateways {
			c.Gateways[j].Up = up
		}
	}
	if !found {
		return fmt.Errorf("no cluster %s", cluster)
	}
	for i := range f.topology.Links {
		l := &f.topology.Links[i]
		if l.To == cluster || l.From == cluster {
			if up {
				l.Health, l.RPS, l.ErrorRate = "ok", 10, 0
			} else {
				l.Health, l.RPS, l.ErrorRate = "down", 0, 1
			}
		}
	}
	f.topology.GeneratedAt = rfc(now)
	f.publish("topology", f.topology)
	if !up {
		ev := eventDoc{Time: rfc(now), Kind: "failover", Cluster: cluster, Detail: "default/reviews: " + cluster + " has no gateway up; calls go to east"}
		f.timeline = append([]eventDoc{ev}, f.timeline...)
		f.publish("timeline", ev)
	} else {
		ev := eventDoc{Time: rfc(now), Kind: "connect", Cluster: cluster, Detail: cluster + "'s gateway is up again"}
		f.timeline = append([]eventDoc{ev}, f.timeline...)
		f.publish("timeline", ev)
	}
	f.rev++
	f.hub.Revision = f.rev
	f.publish("hub", f.hub)
	return nil
}

// expireSessions ends every session and closes every stream, as a hub
// does when a login's lifetime is over.
func (f *fakeHub) expireSessions() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.sessions)
	for ch := range f.streams {
		close(ch)
		delete(f.streams, ch)
	}
	return nil
}
