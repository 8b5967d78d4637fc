package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// uiSession logs a client in to server i's UI with a token from the Admin
// API and returns it with the server's base URL.
func uiSession(t *testing.T, h *testHub, i int) (*http.Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login, err := h.Admin().CreateUILogin(ctx, &fedv1.CreateUILoginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := noRedirect(t)
	base := "http://" + h.Server(i).HTTPAddr()
	if resp, _ := httpGet(t, c, base+"/ui/login?token="+login.GetToken()); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	return c, base
}

func getJSON(t *testing.T, c *http.Client, u string, v any) {
	t.Helper()
	resp, body := httpGet(t, c, u)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, body)
	}
}

// trafficHello is a hello that negotiates traffic summaries.
func trafficHello() *fedv1.SyncHello {
	return &fedv1.SyncHello{Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion,
		Features: []string{federation.FeatureSyncTraffic}}}
}

// TestUIViewsShowClustersServicesTrafficAndTimelineOnEveryServer: two
// clusters join a three-server hub; east publishes a service and, on its
// stream to server 1, a traffic summary with a failover. Server 0's views
// show both clusters connected, the service with its exporter, the link
// with its rate, and the failover on the timeline (fetched from server 1).
func TestUIViewsShowClustersServicesTrafficAndTimelineOnEveryServer(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	c, base := uiSession(t, h, 0)
	east := joinCluster(t, admin, "east")
	west := joinCluster(t, admin, "west")
	conn, err := east.dial(h.Server(1).GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	east.conn = conn
	es, err := east.syncHello(0, trafficHello())
	if err != nil {
		t.Fatal(err)
	}
	ws, err := west.syncHello(0, trafficHello())
	if err != nil {
		t.Fatal(err)
	}
	if res, err := es.publishRetrying(1, []*fedv1.ExportedService{svc("default", "reviews", 3)}); err != nil || res.GetErrorCode() != "" {
		t.Fatalf("publish: %v %v", res, err)
	}
	sum := &fedv1.TrafficSummary{IntervalMs: 10000,
		Links:    []*fedv1.LinkTraffic{{Cluster: "west", Requests: 1000, Errors: 600, P99Ms: 12.5, Failovers: 7}},
		Gateways: []*fedv1.GatewayReplicaHealth{{Instance: "east-gw-0", Serving: true}}}
	if err := es.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Traffic{Traffic: sum}}); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 10*time.Second, "the topology on server 0", func() error {
		var topo uiTopology
		getJSON(t, c, base+"/ui/api/topology", &topo)
		if len(topo.Clusters) != 2 || !topo.Clusters[0].Connected || !topo.Clusters[1].Connected {
			return fmt.Errorf("clusters %+v: want east and west connected", topo.Clusters)
		}
		if topo.Clusters[0].Exports != 1 || len(topo.Clusters[0].Gateways) != 1 || !topo.Clusters[0].Gateways[0].Up {
			return fmt.Errorf("east %+v: want 1 export and gateway east-gw-0 up", topo.Clusters[0])
		}
		want := uiLink{From: "east", To: "west", RPS: 100, ErrorRate: 0.6, P99Ms: 12.5, Health: linkDown}
		if len(topo.Links) != 1 || topo.Links[0] != want {
			return fmt.Errorf("links %+v, want %+v", topo.Links, want)
		}
		return nil
	})
	var svcs uiServices
	getJSON(t, c, base+"/ui/api/services", &svcs)
	if len(svcs.Services) != 1 || svcs.Services[0].Service != "default/reviews" ||
		len(svcs.Services[0].Exporters) != 1 || svcs.Services[0].Exporters[0].ReadyByZone["z1"] != 3 ||
		strings.Join(svcs.Services[0].Importers, ",") != "east,west" {
		t.Errorf("services %+v: want default/reviews exported by east with 3 ready in z1, imported by east and west", svcs)
	}
	// West exports reviews too, its port "http" on another number: the
	// view shows the conflict on both exports, by the agents' rule.
	clash := svc("default", "reviews", 1)
	clash.Ports[0].Port = 9090
	if res, err := ws.publishRetrying(1, []*fedv1.ExportedService{clash}); err != nil || res.GetErrorCode() != "" {
		t.Fatalf("west publish: %v %v", res, err)
	}
	waitFor(t, 10*time.Second, "the conflict in the services view", func() error {
		var svcs uiServices
		getJSON(t, c, base+"/ui/api/services", &svcs)
		if len(svcs.Services) != 1 || len(svcs.Services[0].Exporters) != 2 {
			return fmt.Errorf("services %+v: want reviews with two exporters", svcs)
		}
		ex := svcs.Services[0].Exporters // by cluster: east, west
		if !strings.Contains(ex[0].Conflict, "conflict with this one") || !strings.Contains(ex[1].Conflict, "the oldest export, from cluster east, wins") {
			return fmt.Errorf("exporters %+v: want east (oldest) and west (port clash) in conflict", ex)
		}
		return nil
	})
	var tr uiTrust
	getJSON(t, c, base+"/ui/api/trust", &tr)
	if len(tr.Domains) != 2 || tr.Domains[0].Cluster != "east" || tr.Domains[0].BundleSequence != 1 || tr.Domains[0].RootExpiry == "" {
		t.Errorf("trust %+v: want east's and west's bundles with sequence and root expiry", tr)
	}
	var hv uiHubView
	getJSON(t, c, base+"/ui/api/hub", &hv)
	leaders := 0
	for _, s := range hv.Servers {
		if s.Leader {
			leaders++
		}
		if s.RaftIndex == 0 {
			t.Errorf("server %s: no Raft index", s.ID)
		}
	}
	if len(hv.Servers) != 3 || leaders != 1 || hv.Streams != 2 || len(hv.Members) != 2 || hv.Members[0].LastContact == "" {
		t.Errorf("hub %+v: want 3 servers, 1 leader, 2 streams, 2 members with a last contact", hv)
	}
	waitFor(t, 10*time.Second, "the timeline on server 0", func() error {
		var tl uiTimeline
		getJSON(t, c, base+"/ui/api/timeline", &tl)
		kinds := map[string]int{}
		for _, e := range tl.Events {
			kinds[e.Kind+"/"+e.Cluster]++
		}
		if kinds["failover/west"] != 1 || kinds["join/east"] != 1 || kinds["join/west"] != 1 {
			return fmt.Errorf("events %+v: want joins of east and west, one failover from west", tl.Events)
		}
		return nil
	})
}

// sseEvent is one server-sent event.
type sseEvent struct{ name, data string }

// readSSE sends the events of an open stream to ch until it ends.
func readSSE(body *bufio.Reader, ch chan<- sseEvent) {
	defer close(ch)
	var ev sseEvent
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.name != "" {
				ch <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// TestUIEventStreamSendsViewsAtConnectAndChanges: a stream gets the four
// views at once, then a services event when a cluster publishes, and a
// timeline event when a cluster joins.
func TestUIEventStreamSendsViewsAtConnectAndChanges(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	c, base := uiSession(t, h, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ui/api/events", nil)
	c.Timeout = 0
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, ct)
	}
	ch := make(chan sseEvent, 64)
	go readSSE(bufio.NewReader(resp.Body), ch)
	next := func(pred func(sseEvent) bool, what string) sseEvent {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					t.Fatalf("stream ended waiting for %s", what)
				}
				if pred(ev) {
					return ev
				}
			case <-deadline:
				t.Fatalf("no %s within 10s", what)
			}
		}
	}
	seen := map[string]bool{}
	for range uiViews {
		ev := next(func(sseEvent) bool { return true }, "the initial views")
		seen[ev.name] = json.Valid([]byte(ev.data))
	}
	for _, v := range uiViews {
		if !seen[v] {
			t.Errorf("no valid %s event at connect (%v)", v, seen)
		}
	}
	a := joinCluster(t, admin, "east")
	ev := next(func(e sseEvent) bool { return e.name == "timeline" && strings.Contains(e.data, `"kind":"join"`) }, "the join on the timeline")
	var je uiEvent
	if err := json.Unmarshal([]byte(ev.data), &je); err != nil || je.Cluster != "east" {
		t.Errorf("timeline event %s: want east's join (%v)", ev.data, err)
	}
	st, err := a.syncHello(0, trafficHello())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.publishRetrying(1, []*fedv1.ExportedService{svc("default", "reviews", 2)}); err != nil {
		t.Fatal(err)
	}
	next(func(e sseEvent) bool { return e.name == "services" && strings.Contains(e.data, "default/reviews") }, "services with default/reviews")
	next(func(e sseEvent) bool { return e.name == "topology" && strings.Contains(e.data, `"connected":true`) }, "topology with east connected")
}

func TestUISlowStreamIsDroppedWithoutBlockingOthers(t *testing.T) {
	u := newUIStreams(2, prometheus.NewRegistry())
	slow, err := u.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	fast, err := u.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.subscribe(); err != errTooManyStreams {
		t.Fatalf("third stream of 2: %v, want errTooManyStreams", err)
	}
	for i := range uiStreamBuffer + 1 {
		u.broadcast([]byte{byte(i)}) // never blocks: slow never reads
		<-fast.frames
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("a stream that did not read past its buffer was not dropped")
	}
	select {
	case <-fast.gone:
		t.Fatal("the stream that reads was dropped")
	default:
	}
	if u.count() != 1 {
		t.Errorf("%d streams open, want 1", u.count())
	}
	if _, err := u.subscribe(); err != nil {
		t.Errorf("a stream in the freed place: %v", err)
	}
}

func TestTrafficSummaryBoundsNameTheField(t *testing.T) {
	ok := &fedv1.TrafficSummary{IntervalMs: 10000, Links: []*fedv1.LinkTraffic{{Cluster: "west", Requests: 2, Errors: 1}}}
	if err := checkTrafficSummary(ok); err != nil {
		t.Fatal(err)
	}
	for field, bad := range map[string]*fedv1.TrafficSummary{
		"traffic.interval_ms":          {},
		"traffic.links[0].cluster":     {IntervalMs: 1, Links: []*fedv1.LinkTraffic{{Cluster: "Not A Name"}}},
		"traffic.links[0].errors":      {IntervalMs: 1, Links: []*fedv1.LinkTraffic{{Cluster: "west", Errors: 1}}},
		"traffic.links[1].cluster":     {IntervalMs: 1, Links: []*fedv1.LinkTraffic{{Cluster: "west"}, {Cluster: "west"}}},
		"traffic.links[0].p99_ms":      {IntervalMs: 1, Links: []*fedv1.LinkTraffic{{Cluster: "west", P99Ms: -1}}},
		"traffic.gateways[0].instance": {IntervalMs: 1, Gateways: []*fedv1.GatewayReplicaHealth{{}}},
	} {
		err := checkTrafficSummary(bad)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming it", field, err)
		}
	}
}
