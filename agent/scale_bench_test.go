package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/testenv"
)

// The fixed workload of BenchmarkScale.
const (
	scaleAgents       = 256
	scaleServices     = 50 // per agent
	scaleZoneReady    = 5  // ready endpoints in each of the 2 zones of a service: 10 endpoints
	scaleFanoutRounds = 6
	scaleConcurrency  = 16 // joins and stream opens in flight
	scaleNamespace    = "bench"

	scaleFullNonce = 1 // nonce of each agent's publish of all its services

	scaleJoinTimeout    = 5 * time.Minute
	scaleConnectTimeout = 2 * time.Minute
	scaleSyncTimeout    = 3 * time.Minute
	scaleFanoutTimeout  = time.Minute
)

var scaleRegions = [...]string{"us-east", "us-west", "eu-west", "ap-south"}

// BenchmarkScale measures a 3-server hub (real `meshfed hub` processes)
// serving 256 simulated agents that each export 50 services of 10
// endpoints (2 zones × 5 ready): 12,800 exports, every one streamed to
// every agent.
//
// A simulated agent is a real cluster joined with a token (Join, file
// source) that speaks the Sync protocol with its stored credentials, but
// keeps only a light view: the ready count of each export, by dense index,
// and which clusters are members. 256 full Agents would hold 256 decoded
// views and their caches, which measures the agents rather than the hub.
//
// Phases, each bounded by a deadline:
//   - join: 256 tokens created and redeemed, 16 at a time (join-s);
//   - connect: every agent opens its Sync stream, then waits until its view
//     holds all 256 clusters and the hub shows all 256 connected (their
//     connection leases, which agents are not sent), so that the next phase
//     starts on a quiet hub;
//   - full sync: t0 is the moment the bench releases the agents' publishes
//     (each stream open and synced, nothing exported yet); all 256 send their
//     50 services in one PublishExports at once. publish-ack-s is until every
//     PublishResult came back, fullsync-s until every agent's view holds all
//     12,800 exports;
//   - hub memory after the full sync: each server's RSS (hub-rss-max-MiB,
//     hub-rss-sum-MiB) and its live heap after two GCs
//     (hub-live-heap-max-MiB, from /debug/pprof; the RSS is mostly garbage
//     and pooled gRPC buffers of the burst), and this process's heap in use after a GC
//     (bench-heap-MiB). The log adds each server's Go heap and GC goal (from
//     /metrics) before and after, and the CPU seconds the hub servers and
//     this process spent on the full sync: both share the machine;
//   - fan-out: 6 times, one agent republishes one service with one endpoint
//     less ready (10 → 9); a sample is, for each of the 256 agents, the time
//     from that send until its view shows 9. The 6 origins are spread over
//     the agents (hence over the hub servers, leader and followers), each
//     changing a different service. fanout-p50-ms, fanout-p99-ms and
//     fanout-max-ms are over all 6 × 256 samples.
//
// The simulated agents decode every delta in this process, on the same
// machine as the hub: on a small machine the full sync is bounded by this
// process's CPU as much as by the hub's (the log shows both).
//
// b.N runs the whole workload that many times (run it with -benchtime 1x);
// ns/op includes starting the hub.
func BenchmarkScale(b *testing.B) {
	var runs []scaleResult
	for range b.N {
		runs = append(runs, runScale(b))
	}
	var join, ack, full time.Duration
	var fanout []time.Duration
	var rssMax, rssSum, liveMax, heap float64
	for _, r := range runs {
		join += r.join
		ack += r.publishAck
		full += r.fullSync
		fanout = append(fanout, r.fanout...)
		var sum int64
		for _, v := range r.hubRSS {
			rssMax = max(rssMax, scaleMiB(v))
			sum += v
		}
		rssSum = max(rssSum, scaleMiB(sum))
		for _, v := range r.hubLive {
			liveMax = max(liveMax, scaleMiB(v))
		}
		heap = max(heap, scaleMiB(int64(r.heapInuse)))
	}
	n := time.Duration(len(runs))
	slices.Sort(fanout)
	b.ReportMetric((join / n).Seconds(), "join-s")
	b.ReportMetric((ack / n).Seconds(), "publish-ack-s")
	b.ReportMetric((full / n).Seconds(), "fullsync-s")
	b.ReportMetric(scaleMs(scalePercentile(fanout, 50)), "fanout-p50-ms")
	b.ReportMetric(scaleMs(scalePercentile(fanout, 99)), "fanout-p99-ms")
	b.ReportMetric(scaleMs(fanout[len(fanout)-1]), "fanout-max-ms")
	b.ReportMetric(rssMax, "hub-rss-max-MiB")
	b.ReportMetric(rssSum, "hub-rss-sum-MiB")
	b.ReportMetric(liveMax, "hub-live-heap-max-MiB")
	b.ReportMetric(heap, "bench-heap-MiB")
}

type scaleResult struct {
	join, publishAck, fullSync time.Duration
	fanout                     []time.Duration
	hubRSS                     []int64
	hubLive                    []int64
	heapInuse                  uint64
}

func runScale(b *testing.B) scaleResult {
	var res scaleResult
	if scaleServices > DefaultMaxPublishBatch {
		b.Fatalf("%d services do not fit in one PublishExports (at most %d changes)", scaleServices, DefaultMaxPublishBatch)
	}
	fed := testenv.Start(b, testenv.Options{HubServers: 3, NoAgents: true})
	defer func() { _ = fed.Close() }() // also at cleanup; here so that b.N > 1 runs one hub at a time
	admin := adminClient(b, fed)
	s := newScaleRun()

	// Join: each cluster for real, with its own data directory.
	root := b.TempDir()
	cfgs := make([]Config, scaleAgents)
	for i := range cfgs {
		region := scaleRegions[i%len(scaleRegions)]
		cfgs[i] = fileConfig(b, s.names[i], region, region+"-1a", filepath.Join(root, s.names[i]))
	}
	t := time.Now()
	joinCtx, cancelJoin := context.WithTimeout(context.Background(), scaleJoinTimeout)
	err := scaleForEach(scaleAgents, func(i int) error {
		tok, err := admin.CreateToken(joinCtx, &fedv1.CreateTokenRequest{Cluster: s.names[i]})
		if err != nil {
			return fmt.Errorf("token for %s: %w", s.names[i], err)
		}
		if err := Join(joinCtx, cfgs[i], tok.GetToken()); err != nil {
			return fmt.Errorf("join %s: %w", s.names[i], err)
		}
		return nil
	})
	cancelJoin()
	if err != nil {
		b.Fatalf("joining %d clusters: %v", scaleAgents, err)
	}
	res.join = time.Since(t)
	b.Logf("join: %d clusters in %v (%d at a time)", scaleAgents, res.join.Round(time.Millisecond), scaleConcurrency)

	// Connect: a client connection per agent with its stored credentials,
	// then a Sync stream each.
	for i := range cfgs {
		a, err := dialScaleAgent(s, i, cfgs[i].DataDir)
		if err != nil {
			b.Fatal(err)
		}
		s.agents = append(s.agents, a)
	}
	defer s.close(b)
	t = time.Now()
	if err := scaleForEach(scaleAgents, func(i int) error { return s.agents[i].open(s) }); err != nil {
		b.Fatalf("opening Sync streams: %v", err)
	}
	if err := s.wait(s.connected, t, scaleConnectTimeout, "every agent's view holds all clusters"); err != nil {
		b.Fatal(err)
	}
	if err := testenv.WaitFor(context.Background(), scaleConnectTimeout, func(ctx context.Context) error {
		resp, err := admin.ListClusters(ctx, &fedv1.ListClustersRequest{})
		if err != nil {
			return err
		}
		n := 0
		for _, c := range resp.GetClusters() {
			if c.GetStatus() == "connected" {
				n++
			}
		}
		if n != scaleAgents {
			return fmt.Errorf("the hub shows %d of %d clusters connected", n, scaleAgents)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	perServer := map[string]int{}
	for _, a := range s.agents {
		perServer[a.server]++
	}
	b.Logf("connect: %d streams open, every view holds %d clusters and the hub shows them connected after %v; streams per server: %v",
		scaleAgents, scaleAgents, time.Since(t).Round(time.Millisecond), perServer)
	before, err := scaleSample(fed)
	if err != nil {
		b.Fatal(err)
	}

	// Full sync: every agent publishes its services at once.
	t0 := time.Now()
	for _, a := range s.agents {
		msg := &fedv1.PublishExports{Nonce: scaleFullNonce}
		for j := range scaleServices {
			msg.Upserts = append(msg.Upserts, a.service(j, 2*scaleZoneReady))
		}
		if err := a.publish(msg); err != nil {
			b.Fatalf("%s: publish: %v", a.name, err)
		}
	}
	if err := s.wait(s.acked, t0, scaleSyncTimeout, "every agent's publish acknowledged"); err != nil {
		b.Fatal(err)
	}
	res.publishAck = s.acked.last().Sub(t0)
	if err := s.wait(s.synced, t0, scaleSyncTimeout, fmt.Sprintf("every view holds %d exports", scaleAgents*scaleServices)); err != nil {
		b.Fatal(err)
	}
	res.fullSync = s.synced.last().Sub(t0)
	after, err := scaleSample(fed)
	if err != nil {
		b.Fatal(err)
	}
	acks, syncs := s.acked.since(t0), s.synced.since(t0)
	slices.Sort(acks)
	slices.Sort(syncs)
	b.Logf("full sync, from the release of %d publishes of %d services: acknowledged first/p50/last %v/%v/%v; views hold all %d exports first/p50/last %v/%v/%v",
		scaleAgents, scaleServices, scaleRound(acks[0]), scaleRound(scalePercentile(acks, 50)), scaleRound(res.publishAck),
		scaleAgents*scaleServices, scaleRound(syncs[0]), scaleRound(scalePercentile(syncs, 50)), scaleRound(res.fullSync))
	b.Logf("CPU during the full sync (%v wall, %d cores): hub servers %v s, bench process %.1f s",
		scaleRound(after.at.Sub(before.at)), runtime.NumCPU(), scaleCPUDelta(before, after), after.selfCPU-before.selfCPU)

	// Memory, on a quiet hub with everything synced.
	for _, srv := range fed.Hub().Servers() {
		rss, err := srv.RSS()
		if err != nil {
			b.Fatalf("RSS of %s: %v", srv.Name(), err)
		}
		res.hubRSS = append(res.hubRSS, rss)
		live, err := srv.LiveHeap(context.Background())
		if err != nil {
			b.Fatalf("live heap of %s: %v", srv.Name(), err)
		}
		res.hubLive = append(res.hubLive, live)
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	res.heapInuse = m.HeapInuse
	b.Logf("live heap after full sync (two GCs): hub servers %v MiB", scaleMiBs(res.hubLive))
	b.Logf("memory after full sync: hub servers (leader %s) RSS %v MiB, Go heap in use %v MiB, next GC at %v MiB "+
		"(before the publishes: RSS %v, heap in use %v, next GC at %v); bench process heap in use after a GC %.0f MiB (%d simulated agents, their connections and views)",
		scaleHubLeader(admin), scaleMiBs(res.hubRSS), scaleMiBs(after.hubHeap), scaleMiBs(after.hubGoal),
		scaleMiBs(before.hubRSS), scaleMiBs(before.hubHeap), scaleMiBs(before.hubGoal), scaleMiB(int64(m.HeapInuse)), scaleAgents)

	// Fan-out of single changes.
	var rounds []string
	for r := range scaleFanoutRounds {
		origin := s.agents[r*scaleAgents/scaleFanoutRounds]
		j := r % scaleServices
		lat, err := s.fanout(r+1, origin, j)
		if err != nil {
			b.Fatal(err)
		}
		slices.Sort(lat)
		rounds = append(rounds, fmt.Sprintf("%s on %s: %v/%v", origin.name, origin.server,
			scalePercentile(lat, 50).Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond)))
		res.fanout = append(res.fanout, lat...)
	}
	b.Logf("fan-out of one service's ready 10 → 9 to %d agents, p50/max per round: %s", scaleAgents, strings.Join(rounds, "; "))
	return res
}

// scaleRun is what the simulated agents share: the name → index tables of
// the fixed key space (read-only), the milestones they mark, and the first
// failure.
type scaleRun struct {
	names      []string
	clusterIdx map[string]int
	svcByName  map[string]int // name in scaleNamespace
	svcByKey   map[string]int // namespace/name
	agents     []*scaleAgent

	connected *scaleMilestone // the agent's view holds every cluster
	acked     *scaleMilestone // the agent's full publish is acknowledged
	synced    *scaleMilestone // the agent's view holds every export
	probe     atomic.Pointer[scaleProbe]

	closing  atomic.Bool
	failOnce sync.Once
	failed   chan struct{}
	failErr  error
}

func newScaleRun() *scaleRun {
	s := &scaleRun{
		clusterIdx: map[string]int{}, svcByName: map[string]int{}, svcByKey: map[string]int{},
		connected: newScaleMilestone(scaleAgents), acked: newScaleMilestone(scaleAgents), synced: newScaleMilestone(scaleAgents),
		failed: make(chan struct{}),
	}
	for i := range scaleAgents {
		n := fmt.Sprintf("c%03d", i)
		s.names = append(s.names, n)
		s.clusterIdx[n] = i
	}
	for j := range scaleServices {
		n := scaleServiceName(j)
		s.svcByName[n] = j
		s.svcByKey[scaleNamespace+"/"+n] = j
	}
	return s
}

func scaleServiceName(j int) string { return fmt.Sprintf("svc-%02d", j) }

// fail records the first failure; waits return it at once.
func (s *scaleRun) fail(err error) {
	if s.closing.Load() {
		return
	}
	s.failOnce.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

// wait waits until every agent reached m, an agent failed, or timeout
// passed since start.
func (s *scaleRun) wait(m *scaleMilestone, start time.Time, timeout time.Duration, what string) error {
	timer := time.NewTimer(time.Until(start.Add(timeout)))
	defer timer.Stop()
	select {
	case <-m.done:
		return nil
	case <-s.failed:
		return fmt.Errorf("waiting until %s: %w", what, s.failErr)
	case <-timer.C:
		var missing []string
		for i, a := range s.agents {
			if !m.hit[i].Load() {
				missing = append(missing, fmt.Sprintf("%s (on %s: %d exports, %d member clusters)", a.name, a.server, a.exportsSeen.Load(), a.connectedSeen.Load()))
			}
		}
		more := ""
		if len(missing) > 8 {
			missing, more = missing[:8], fmt.Sprintf(" and %d more", len(missing)-8)
		}
		return fmt.Errorf("not every agent reached %q %v after the start: %d missing: %s%s",
			what, timeout, m.left.Load(), strings.Join(missing, ", "), more)
	}
}

// fanout has origin republish service j with 9 ready endpoints instead of
// 10, and returns for each agent the time until its view showed it.
func (s *scaleRun) fanout(id int, origin *scaleAgent, j int) ([]time.Duration, error) {
	p := &scaleProbe{id: id, slot: origin.idx*scaleServices + j, want: 2*scaleZoneReady - 1, m: newScaleMilestone(scaleAgents)}
	msg := &fedv1.PublishExports{Nonce: uint64(scaleFullNonce + id), Upserts: []*fedv1.ExportedService{origin.service(j, 2*scaleZoneReady-1)}}
	p.start = time.Now()
	s.probe.Store(p)
	defer s.probe.Store(nil)
	if err := origin.publish(msg); err != nil {
		return nil, fmt.Errorf("fan-out %d: %s: publish: %w", id, origin.name, err)
	}
	if err := s.wait(p.m, p.start, scaleFanoutTimeout, fmt.Sprintf("fan-out %d reached every agent", id)); err != nil {
		return nil, err
	}
	return p.m.since(p.start), nil
}

// close ends every stream and connection and waits for the receivers; it
// may be called more than once.
func (s *scaleRun) close(b *testing.B) {
	if s.closing.Swap(true) {
		return
	}
	for _, a := range s.agents {
		if a.cancel != nil {
			a.cancel()
		}
		if err := a.conn.Close(); err != nil {
			b.Errorf("%s: closing the connection: %v", a.name, err)
		}
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for _, a := range s.agents {
		if a.done == nil {
			continue
		}
		select {
		case <-a.done:
		case <-timer.C:
			b.Errorf("%s: the Sync receiver did not stop 30s after its stream was cancelled", a.name)
			return
		}
	}
}

// scaleProbe is the change that one fan-out round waits for.
type scaleProbe struct {
	id    int
	slot  int
	want  int32
	start time.Time
	m     *scaleMilestone
}

// scaleMilestone records when each agent first reached something; done is
// closed when all have.
type scaleMilestone struct {
	at   []time.Time // at[i] written once, by agent i's receiver, before hit[i]
	hit  []atomic.Bool
	left atomic.Int64
	done chan struct{}
}

func newScaleMilestone(n int) *scaleMilestone {
	m := &scaleMilestone{at: make([]time.Time, n), hit: make([]atomic.Bool, n), done: make(chan struct{})}
	m.left.Store(int64(n))
	return m
}

func (m *scaleMilestone) mark(i int) {
	if m.hit[i].Load() {
		return
	}
	m.at[i] = time.Now()
	m.hit[i].Store(true)
	if m.left.Add(-1) == 0 {
		close(m.done)
	}
}

// last is when the last agent reached m; call it once done is closed.
func (m *scaleMilestone) last() time.Time {
	var t time.Time
	for _, at := range m.at {
		if at.After(t) {
			t = at
		}
	}
	return t
}

// since returns each agent's time from start; call it once done is closed.
func (m *scaleMilestone) since(start time.Time) []time.Duration {
	out := make([]time.Duration, len(m.at))
	for i, at := range m.at {
		out[i] = at.Sub(start)
	}
	return out
}

// scaleAgent is one simulated agent: a joined cluster's connection and
// Sync stream, and a light view kept by its receiver goroutine.
type scaleAgent struct {
	idx    int
	name   string
	region string
	conn   *grpc.ClientConn
	server string // the hub server of the stream, from its hello

	sendMu sync.Mutex
	stream fedv1.Sync_SyncClient
	cancel context.CancelFunc
	done   chan struct{} // closed when the receiver returns

	// Owned by the receiver.
	asm       deltaAssembler
	ready     []int32 // ready endpoints of export cluster*scaleServices+service; -1: absent
	exports   int
	clusterUp []bool
	up        int
	probeSeen int

	// Mirrors for timeout messages.
	exportsSeen, connectedSeen atomic.Int64
}

// dialScaleAgent loads the credentials Join stored in dataDir and dials
// the hub with them, as runHub does.
func dialScaleAgent(s *scaleRun, i int, dataDir string) (*scaleAgent, error) {
	raw, err := fileStores(dataDir).creds.Load()
	if err != nil {
		return nil, fmt.Errorf("%s: stored credentials: %w", s.names[i], err)
	}
	creds, err := decodeCredentials(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.names[i], err)
	}
	tlsCfg, err := creds.hubTLS()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.names[i], err)
	}
	conn, err := hubdial.Dial(creds.HubAddresses, tlsCfg, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("%s: dial hub: %w", s.names[i], err)
	}
	a := &scaleAgent{idx: i, name: s.names[i], region: creds.Region, conn: conn,
		ready: make([]int32, scaleAgents*scaleServices), clusterUp: make([]bool, scaleAgents)}
	for k := range a.ready {
		a.ready[k] = -1
	}
	return a, nil
}

// open starts the Sync stream (hello, resume from 0) and its receiver.
func (a *scaleAgent) open(s *scaleRun) error {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	stream, err := fedv1.NewSyncClient(a.conn).Sync(ctx)
	if err != nil {
		return fmt.Errorf("%s: sync: %w", a.name, err)
	}
	a.stream = stream
	if err := stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: &fedv1.SyncHello{
		Cluster: a.name, ResumeRevision: 0, Capabilities: localCapabilities(),
	}}}); err != nil {
		return fmt.Errorf("%s: hello: %w", a.name, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("%s: hello: %w", a.name, err)
	}
	if first.GetHello() == nil {
		return fmt.Errorf("%s: first message is %T, want hello", a.name, first.GetMsg())
	}
	a.server = first.GetHello().GetServer()
	a.done = make(chan struct{})
	go a.receive(s)
	return nil
}

func (a *scaleAgent) publish(m *fedv1.PublishExports) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return a.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Publish{Publish: m}})
}

// service is export j of this agent with ready endpoints over its 2 zones.
func (a *scaleAgent) service(j int, ready uint32) *fedv1.ExportedService {
	first := ready - ready/2
	return &fedv1.ExportedService{
		Namespace: scaleNamespace, Name: scaleServiceName(j),
		Ports: []*fedv1.ServicePort{{Name: "http", Port: 8080, Protocol: "HTTP"}},
		Endpoints: []*fedv1.EndpointGroup{
			{Zone: a.region + "-1a", Ready: first, Serving: first},
			{Zone: a.region + "-1b", Ready: ready / 2, Serving: ready / 2},
		},
	}
}

func (a *scaleAgent) receive(s *scaleRun) {
	defer close(a.done)
	for {
		m, err := a.stream.Recv()
		if err != nil {
			s.fail(fmt.Errorf("%s: Sync stream on %s: %w", a.name, a.server, err))
			return
		}
		switch {
		case m.GetDelta() != nil:
			full, err := a.asm.add(m.GetDelta())
			if err != nil {
				s.fail(fmt.Errorf("%s: %w", a.name, err))
				return
			}
			if full == nil {
				continue
			}
			if err := a.apply(s, full); err != nil {
				s.fail(fmt.Errorf("%s: delta at revision %d: %w", a.name, full.GetRevision(), err))
				return
			}
			a.observe(s)
		case m.GetPublishResult() != nil:
			r := m.GetPublishResult()
			if r.GetErrorCode() != "" {
				s.fail(fmt.Errorf("%s: the hub refused publish %d: %s: %s", a.name, r.GetNonce(), r.GetErrorCode(), r.GetError()))
				return
			}
			if r.GetNonce() == scaleFullNonce {
				s.acked.mark(a.idx)
			}
		}
	}
}

// apply applies a complete delta to the light view.
func (a *scaleAgent) apply(s *scaleRun, d *fedv1.SyncDelta) error {
	if d.GetReset_() {
		for k := range a.ready {
			a.ready[k] = -1
		}
		clear(a.clusterUp)
		a.exports, a.up = 0, 0
	}
	setUp := func(name string, up bool) error {
		i, ok := s.clusterIdx[name]
		if !ok {
			return fmt.Errorf("unknown cluster %q", name)
		}
		switch {
		case up && !a.clusterUp[i]:
			a.up++
		case !up && a.clusterUp[i]:
			a.up--
		}
		a.clusterUp[i] = up
		return nil
	}
	for _, c := range d.GetClusters() {
		if err := setUp(c.GetName(), true); err != nil { // a member's record
			return err
		}
	}
	for _, n := range d.GetRemovedClusters() {
		if err := setUp(n, false); err != nil {
			return err
		}
	}
	for _, e := range d.GetExports() {
		ci, ok1 := s.clusterIdx[e.GetCluster()]
		si, ok2 := s.svcByName[e.GetService().GetName()]
		if !ok1 || !ok2 || e.GetService().GetNamespace() != scaleNamespace {
			return fmt.Errorf("unknown export %s %s/%s", e.GetCluster(), e.GetService().GetNamespace(), e.GetService().GetName())
		}
		var ready int32
		for _, g := range e.GetService().GetEndpoints() {
			ready += int32(g.GetReady())
		}
		slot := ci*scaleServices + si
		if a.ready[slot] < 0 {
			a.exports++
		}
		a.ready[slot] = ready
	}
	for _, r := range d.GetRemovedExports() {
		ci, ok1 := s.clusterIdx[r.GetCluster()]
		si, ok2 := s.svcByKey[r.GetService()]
		if !ok1 || !ok2 {
			return fmt.Errorf("unknown removed export %s %s", r.GetCluster(), r.GetService())
		}
		if slot := ci*scaleServices + si; a.ready[slot] >= 0 {
			a.ready[slot] = -1
			a.exports--
		}
	}
	a.exportsSeen.Store(int64(a.exports))
	a.connectedSeen.Store(int64(a.up))
	return nil
}

// observe marks the milestones the view reached.
func (a *scaleAgent) observe(s *scaleRun) {
	if a.up == scaleAgents {
		s.connected.mark(a.idx)
	}
	if a.exports == scaleAgents*scaleServices {
		s.synced.mark(a.idx)
	}
	if p := s.probe.Load(); p != nil && a.probeSeen < p.id && a.ready[p.slot] == p.want {
		a.probeSeen = p.id
		p.m.mark(a.idx)
	}
}

// scaleForEach runs fn(0..n-1), scaleConcurrency at a time, and returns the
// errors joined (at most 5 of them, and how many there were).
func scaleForEach(n int, fn func(i int) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan int)
	for range scaleConcurrency {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more errors", len(errs)-5))
	}
	return errors.Join(errs...)
}

// scaleHubLeader names the leader, for the log.
func scaleHubLeader(admin fedv1.AdminClient) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := admin.Status(ctx, &fedv1.StatusRequest{})
	if err != nil {
		return fmt.Sprintf("unknown: %v", err)
	}
	return st.GetLeader()
}

func scalePercentile(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func scaleMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func scaleMiB(n int64) float64 { return float64(n) / (1 << 20) }

func scaleMiBs(ns []int64) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = fmt.Sprintf("%.0f", scaleMiB(n))
	}
	return out
}

func scaleRound(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// scaleSnapshot is the resource use of the hub servers and of this
// process at one moment.
type scaleSnapshot struct {
	at      time.Time
	hubRSS  []int64
	hubHeap []int64   // go_memstats_heap_inuse_bytes
	hubGoal []int64   // go_memstats_next_gc_bytes: twice the heap live at the last GC (GOGC 100)
	hubCPU  []float64 // process_cpu_seconds_total
	selfCPU float64   // user + system seconds of this process
}

func scaleSample(fed *testenv.Federation) (scaleSnapshot, error) {
	sn := scaleSnapshot{at: time.Now()}
	for _, srv := range fed.Hub().Servers() {
		rss, err := srv.RSS()
		if err != nil {
			return sn, fmt.Errorf("RSS of %s: %w", srv.Name(), err)
		}
		m, err := scaleScrape(srv.HTTPAddr(), "go_memstats_heap_inuse_bytes", "go_memstats_next_gc_bytes", "process_cpu_seconds_total")
		if err != nil {
			return sn, fmt.Errorf("metrics of %s: %w", srv.Name(), err)
		}
		sn.hubRSS = append(sn.hubRSS, rss)
		sn.hubHeap = append(sn.hubHeap, int64(m[0]))
		sn.hubGoal = append(sn.hubGoal, int64(m[1]))
		sn.hubCPU = append(sn.hubCPU, m[2])
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return sn, fmt.Errorf("getrusage: %w", err)
	}
	sn.selfCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	return sn, nil
}

// scaleScrape returns the values of unlabelled metrics from a hub server's
// /metrics (Prometheus text format: "name value" lines).
func scaleScrape(httpAddr string, names ...string) ([]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	found := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || !slices.Contains(names, f[0]) {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f[0], err)
		}
		found[f[0]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]float64, len(names))
	for i, n := range names {
		v, ok := found[n]
		if !ok {
			return nil, fmt.Errorf("no metric %s", n)
		}
		out[i] = v
	}
	return out, nil
}

func scaleCPUDelta(before, after scaleSnapshot) []string {
	out := make([]string, len(after.hubCPU))
	for i := range after.hubCPU {
		out[i] = fmt.Sprintf("%.1f", after.hubCPU[i]-before.hubCPU[i])
	}
	return out
}
