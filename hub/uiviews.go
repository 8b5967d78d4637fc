package hub

import (
	"crypto/x509"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
	"github.com/meshfed/meshfed/internal/mcsconflict"
)

// The web UI's views, as the JSON API serves them (docs/architecture.md,
// "Web UI"). Each is computed from one read of this server's state store
// (not a consistent read: the UI shows this server's view, as Admin Status
// does, and works without a leader), this server's Raft state, and the
// servers' PeerViews. The computations reuse the Admin RPCs' own
// (withConnection, globalServices, touched, policyStatus, bundleHolders,
// status).

// uiTopology is GET /ui/api/topology.
type uiTopology struct {
	GeneratedAt string      `json:"generatedAt"`
	Clusters    []uiCluster `json:"clusters"`
	Links       []uiLink    `json:"links"`
}

type uiCluster struct {
	Name        string      `json:"name"`
	Region      string      `json:"region"`
	Zone        string      `json:"zone"`
	Connected   bool        `json:"connected"`
	LastContact string      `json:"lastContact"`
	Removed     bool        `json:"removed"`
	Gateways    []uiGateway `json:"gateways"`
	Exports     int         `json:"exports"`
}

type uiGateway struct {
	Instance string `json:"instance"`
	Up       bool   `json:"up"`
}

type uiLink struct {
	From      string  `json:"from"`
	To        string  `json:"to"`
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"errorRate"`
	P99Ms     float64 `json:"p99Ms"`
	Health    string  `json:"health"`
}

// Link health.
const (
	linkOK       = "ok"
	linkDegraded = "degraded"
	linkDown     = "down"
	linkIdle     = "idle"
)

// Link health thresholds: an error rate at or above linkDownErrors is
// down, above linkDegradedErrors (or any failover or ejection in the
// interval) degraded.
const (
	linkDownErrors     = 0.5
	linkDegradedErrors = 0.01
)

// linkHealth classifies one link's interval.
func linkHealth(requests, errors, failovers, ejections uint64) string {
	rate := 0.0
	if requests > 0 {
		rate = float64(errors) / float64(requests)
	}
	switch {
	case requests > 0 && rate >= linkDownErrors:
		return linkDown
	case rate > linkDegradedErrors || failovers > 0 || ejections > 0:
		return linkDegraded
	case requests == 0:
		return linkIdle
	}
	return linkOK
}

// uiServices is GET /ui/api/services.
type uiServices struct {
	Services []uiService `json:"services"`
}

type uiService struct {
	Service   string       `json:"service"`
	Exporters []uiExporter `json:"exporters"`
	Importers []string     `json:"importers"`
	Policy    *uiPolicy    `json:"policy"`
}

type uiExporter struct {
	Cluster     string         `json:"cluster"`
	ReadyByZone map[string]int `json:"readyByZone"`
	Conflict    string         `json:"conflict"`
}

type uiPolicy struct {
	Name        string          `json:"name"`
	Revision    uint64          `json:"revision"`
	Enforcement []uiEnforcement `json:"enforcement"`
}

type uiEnforcement struct {
	Cluster  string `json:"cluster"`
	Gateway  string `json:"gateway"`
	Revision uint64 `json:"revision"`
	Current  bool   `json:"current"`
}

// uiTrust is GET /ui/api/trust.
type uiTrust struct {
	Domains []uiDomain `json:"domains"`
}

type uiDomain struct {
	TrustDomain    string      `json:"trustDomain"`
	Cluster        string      `json:"cluster"`
	BundleSequence uint64      `json:"bundleSequence"`
	RootExpiry     string      `json:"rootExpiry"`
	Rotation       *uiRotation `json:"rotation"`
}

// Rotation phases as the hub sees them: the cluster's bundle holds more
// than one root, and not every member that counts holds it yet
// (distributing), or every one does (acknowledged: the cluster's agent
// may switch to the new root).
const (
	rotationDistributing = "distributing"
	rotationAcknowledged = "acknowledged"
)

type uiRotation struct {
	Phase string  `json:"phase"`
	Acks  []uiAck `json:"acks"`
}

type uiAck struct {
	Cluster string `json:"cluster"`
	Holds   bool   `json:"holds"`
}

// uiHubView is GET /ui/api/hub.
type uiHubView struct {
	Servers  []uiServer `json:"servers"`
	Revision uint64     `json:"revision"`
	// Streams counts the agents' Sync streams open on all servers that
	// answered.
	Streams int64      `json:"streams"`
	Members []uiMember `json:"members"`
}

type uiServer struct {
	ID        string `json:"id"`
	Address   string `json:"address"`
	Leader    bool   `json:"leader"`
	RaftIndex uint64 `json:"raftIndex"`
	State     string `json:"state"`
	// Streams is the server's open Sync streams, -1 when it did not answer.
	Streams int64 `json:"streams"`
}

type uiMember struct {
	Cluster     string `json:"cluster"`
	LastContact string `json:"lastContact"`
}

// uiTimeline is GET /ui/api/timeline.
type uiTimeline struct {
	Events []uiEvent `json:"events"`
}

type uiEvent struct {
	Time    string `json:"time"`
	Kind    string `json:"kind"`
	Cluster string `json:"cluster"`
	Detail  string `json:"detail"`
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// msTime is Unix ms as RFC 3339, or "" for 0.
func msTime(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return rfc3339(time.UnixMilli(ms))
}

func uiEventOf(e *hubpb.TimelineEvent) uiEvent {
	return uiEvent{Time: msTime(e.GetTimeMs()), Kind: e.GetKind(), Cluster: e.GetCluster(), Detail: e.GetDetail()}
}

// linkAgg sums one link's interval over the agent streams of its source
// cluster (a leader and standbys each report the gateways connected to
// them).
type linkAgg struct {
	requests, errors, failovers, ejections uint64
	p99Ms                                  float64
	intervalMs                             uint32
}

// trafficBySource merges the fresh summaries of every server's streams:
// links by source and destination, gateways by source cluster.
func trafficBySource(views []peerView, now time.Time) (map[[2]string]*linkAgg, map[string][]uiGateway) {
	links := map[[2]string]*linkAgg{}
	gws := map[string]map[string]bool{}
	for _, pv := range views {
		for _, h := range pv.resp.GetTraffic() {
			sum := h.GetSummary()
			age := now.Sub(time.UnixMilli(h.GetReceivedMs()))
			if age > trafficStale*time.Duration(sum.GetIntervalMs())*time.Millisecond {
				continue
			}
			src := h.GetCluster()
			for _, l := range sum.GetLinks() {
				k := [2]string{src, l.GetCluster()}
				a := links[k]
				if a == nil {
					a = &linkAgg{intervalMs: sum.GetIntervalMs()}
					links[k] = a
				}
				a.requests += l.GetRequests()
				a.errors += l.GetErrors()
				a.failovers += l.GetFailovers()
				a.ejections += l.GetEjections()
				a.p99Ms = math.Max(a.p99Ms, l.GetP99Ms())
				a.intervalMs = max(a.intervalMs, sum.GetIntervalMs())
			}
			if gws[src] == nil {
				gws[src] = map[string]bool{}
			}
			for _, g := range sum.GetGateways() {
				gws[src][g.GetInstance()] = gws[src][g.GetInstance()] || g.GetServing()
			}
		}
	}
	out := map[string][]uiGateway{}
	for src, m := range gws {
		for _, inst := range sortedKeys(m) {
			out[src] = append(out[src], uiGateway{Instance: inst, Up: m[inst]})
		}
	}
	return links, out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// topologyView builds the topology. removed lists clusters this server saw
// removed recently (they are no longer in r).
func topologyView(r *state.ReadTxn, now time.Time, views []peerView, removed []string) uiTopology {
	t := uiTopology{Clusters: []uiCluster{}, Links: []uiLink{}}
	links, gws := trafficBySource(views, now)
	for _, c := range r.Clusters() {
		c = withConnection(r, c, now)
		name, _ := federation.ParseClusterName(c.GetName()) // stored names parse
		uc := uiCluster{
			Name: c.GetName(), Region: c.GetLocality().GetRegion(), Zone: c.GetLocality().GetZone(),
			Connected: c.GetStatus() == "connected", LastContact: msTime(c.GetLastSeenMs()),
			Gateways: gws[c.GetName()], Exports: len(r.ExportsOf(name)),
		}
		if uc.Gateways == nil {
			uc.Gateways = []uiGateway{}
		}
		t.Clusters = append(t.Clusters, uc)
	}
	for _, n := range removed {
		if r.Cluster(n) == nil {
			t.Clusters = append(t.Clusters, uiCluster{Name: n, Removed: true, Gateways: []uiGateway{}})
		}
	}
	keys := make([][2]string, 0, len(links))
	for k := range links {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	for _, k := range keys {
		a := links[k]
		l := uiLink{From: k[0], To: k[1], P99Ms: round3(a.p99Ms), Health: linkHealth(a.requests, a.errors, a.failovers, a.ejections)}
		if a.intervalMs > 0 {
			l.RPS = round3(float64(a.requests) / (float64(a.intervalMs) / 1000))
		}
		if a.requests > 0 {
			l.ErrorRate = round3(float64(a.errors) / float64(a.requests))
		}
		t.Links = append(t.Links, l)
	}
	return t
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// servicesView builds the services view.
func servicesView(r *state.ReadTxn, now time.Time) uiServices {
	v := uiServices{Services: []uiService{}}
	var members []string
	for _, c := range r.Clusters() {
		members = append(members, c.GetName())
	}
	slices.Sort(members)
	for _, g := range globalServices(r) {
		key, _ := federation.ParseServiceKey(g.GetKey()) // made from a parsed key
		svc := uiService{Service: g.GetKey(), Exporters: []uiExporter{}}
		recs := slices.Clone(g.GetExports())
		mcsconflict.Sort(recs)
		conflicts := mcsconflict.Resolve(recs) // the agents' rule
		for i, e := range recs {
			ex := uiExporter{Cluster: e.GetCluster(), ReadyByZone: map[string]int{}, Conflict: conflicts[i].Message}
			for _, eg := range e.GetService().GetEndpoints() {
				ex.ReadyByZone[eg.GetZone()] += int(eg.GetReady())
			}
			svc.Exporters = append(svc.Exporters, ex)
		}
		slices.SortFunc(svc.Exporters, func(a, b uiExporter) int { return strings.Compare(a.Cluster, b.Cluster) })
		_, svc.Importers = touched(r, key, members)
		if svc.Importers == nil {
			svc.Importers = []string{}
		}
		if ps := r.PoliciesFor(g.GetKey()); len(ps) > 0 {
			slices.SortFunc(ps, func(a, b *fedv1.TrafficPolicy) int { return strings.Compare(a.GetName(), b.GetName()) })
			st := policyStatus(r, ps[:1], now.UnixMilli()).GetPolicies()[0]
			p := &uiPolicy{Name: st.GetName(), Revision: st.GetRevision(), Enforcement: []uiEnforcement{}}
			for _, gw := range st.GetGateways() {
				p.Enforcement = append(p.Enforcement, uiEnforcement{Cluster: gw.GetCluster(), Gateway: gw.GetGateway(), Revision: gw.GetRevision(), Current: gw.GetCurrent()})
			}
			svc.Policy = p
		}
		v.Services = append(v.Services, svc)
	}
	return v
}

// rootExpiries caches the earliest root expiry of each bundle by trust
// domain and sequence, so a view does not parse certificates again.
type rootExpiries struct {
	mu sync.Mutex
	m  map[string]rootExpiry
}

type rootExpiry struct {
	seq uint64
	at  time.Time
}

// of returns the earliest NotAfter among b's roots (zero if none parse).
func (c *rootExpiries) of(b *fedv1.TrustBundle) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[b.GetTrustDomain()]; ok && e.seq == b.GetSequenceNumber() {
		return e.at
	}
	var at time.Time
	for _, der := range b.GetX509Authorities() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			continue // stored bundles were validated; nothing to show for one that is not
		}
		if at.IsZero() || cert.NotAfter.Before(at) {
			at = cert.NotAfter
		}
	}
	if c.m == nil {
		c.m = map[string]rootExpiry{}
	}
	c.m[b.GetTrustDomain()] = rootExpiry{seq: b.GetSequenceNumber(), at: at}
	return at
}

// trustView builds the trust view: every bundle the hub holds, members'
// and external trust domains'.
func trustView(r *state.ReadTxn, now time.Time, roots *rootExpiries) uiTrust {
	v := uiTrust{Domains: []uiDomain{}}
	for _, b := range r.Bundles() {
		tb := b.GetBundle()
		d := uiDomain{TrustDomain: tb.GetTrustDomain(), Cluster: b.GetCluster(), BundleSequence: tb.GetSequenceNumber()}
		if at := roots.of(tb); !at.IsZero() {
			d.RootExpiry = rfc3339(at)
		}
		if c := r.Cluster(b.GetCluster()); c != nil && len(tb.GetX509Authorities()) > 1 {
			members, ready := bundleHolders(r, c, tb.GetSequenceNumber(), now)
			rot := &uiRotation{Phase: rotationDistributing, Acks: []uiAck{}}
			if ready {
				rot.Phase = rotationAcknowledged
			}
			for _, m := range members {
				rot.Acks = append(rot.Acks, uiAck{Cluster: m.GetCluster(), Holds: m.GetHolds()})
			}
			d.Rotation = rot
		}
		v.Domains = append(v.Domains, d)
	}
	slices.SortFunc(v.Domains, func(a, b uiDomain) int { return strings.Compare(a.TrustDomain, b.TrustDomain) })
	return v
}

// hubView builds the hub view from st (status) and the servers' PeerViews.
func hubView(r *state.ReadTxn, now time.Time, st *fedv1.StatusResponse, views []peerView) uiHubView {
	v := uiHubView{Revision: st.GetRevision(), Servers: []uiServer{}, Members: []uiMember{}}
	byServer := map[string]*hubpb.PeerViewResponse{}
	for _, pv := range views {
		if pv.err == nil && pv.resp != nil {
			byServer[pv.server] = pv.resp
		}
	}
	for _, s := range st.GetServers() {
		u := uiServer{ID: s.GetName(), Address: s.GetGrpcAddress(), Leader: s.GetName() == st.GetLeader(), State: s.GetState(), Streams: -1}
		if pv, ok := byServer[s.GetName()]; ok {
			u.RaftIndex, u.State, u.Streams = pv.GetAppliedIndex(), pv.GetState(), pv.GetStreams()
			v.Streams += pv.GetStreams()
		}
		v.Servers = append(v.Servers, u)
	}
	for _, c := range r.Clusters() {
		c = withConnection(r, c, now)
		v.Members = append(v.Members, uiMember{Cluster: c.GetName(), LastContact: msTime(c.GetLastSeenMs())})
	}
	return v
}
