package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func svc(ns, name string, port uint32) *fedv1.ExportedService {
	return &fedv1.ExportedService{Namespace: ns, Name: name, Ports: []*fedv1.ServicePort{{Name: "http", Port: port, Protocol: "HTTP"}}}
}

func TestPublisherOneInFlightPerKeyAndBatching(t *testing.T) {
	p := newPublisher(2, 1<<20)
	p.sessionStarted(map[string]*fedv1.ExportedService{"default/old": svc("default", "old", 1)})
	if m := p.next(); m != nil {
		t.Fatalf("sent %v before the source's first set", m)
	}
	p.setDesired(map[string]*fedv1.ExportedService{"default/a": svc("default", "a", 80), "default/b": svc("default", "b", 80), "default/c": svc("default", "c", 80)})
	m1 := p.next()
	m2 := p.next()
	if m1 == nil || m2 == nil || len(m1.Upserts)+len(m1.Deletes) != 2 || len(m2.Upserts)+len(m2.Deletes) != 2 {
		t.Fatalf("batches %v %v, want 2+2 changes (3 upserts, 1 delete of default/old)", m1, m2)
	}
	if m := p.next(); m != nil {
		t.Fatalf("third message %v, want nothing", m)
	}
	// a changes while in flight: not sent again until its result.
	p.setDesired(map[string]*fedv1.ExportedService{"default/a": svc("default", "a", 81), "default/b": svc("default", "b", 80), "default/c": svc("default", "c", 80)})
	if m := p.next(); m != nil {
		t.Fatalf("sent %v while default/a is in flight", m)
	}
	p.result(&fedv1.PublishResult{Nonce: m1.Nonce, Revision: 10})
	p.result(&fedv1.PublishResult{Nonce: m2.Nonce, Revision: 11})
	m3 := p.next()
	if m3 == nil || len(m3.Upserts) != 1 || m3.Upserts[0].GetPorts()[0].GetPort() != 81 {
		t.Fatalf("after results: %v, want the new default/a", m3)
	}
	p.result(&fedv1.PublishResult{Nonce: m3.Nonce, Revision: 12})
	if !p.inSync() {
		t.Fatal("not in sync")
	}
}

func TestPublisherInvalidBatchIsRetriedOneByOne(t *testing.T) {
	p := newPublisher(10, 1<<20)
	p.sessionStarted(nil)
	p.setDesired(map[string]*fedv1.ExportedService{"default/a": svc("default", "a", 80), "default/b": svc("default", "b", 80)})
	m := p.next()
	if !p.result(&fedv1.PublishResult{Nonce: m.Nonce, ErrorCode: codes.InvalidArgument.String(), Error: "upserts[1]: bad"}) {
		t.Fatal("a refused batch of two should be retried")
	}
	a := p.next()
	b := p.next()
	if a == nil || b == nil || len(a.Upserts) != 1 || len(b.Upserts) != 1 {
		t.Fatalf("retries %v %v, want one key each", a, b)
	}
	p.result(&fedv1.PublishResult{Nonce: a.Nonce})
	if p.result(&fedv1.PublishResult{Nonce: b.Nonce, ErrorCode: codes.InvalidArgument.String(), Error: "bad"}) {
		t.Fatal("a single refused key must not be retried")
	}
	if f := p.failures(); len(f) != 1 {
		t.Fatalf("failures %v", f)
	}
	if m := p.next(); m != nil {
		t.Fatalf("resent %v", m)
	}
}

func TestPublisherBoundsMessageBytes(t *testing.T) {
	p := newPublisher(1024, 64<<10)
	p.sessionStarted(nil)
	want := map[string]*fedv1.ExportedService{}
	for i := range 2000 {
		s := svc("default", fmt.Sprintf("s%d", i), 80)
		want["default/"+s.Name] = s
	}
	p.setDesired(want)
	n := 0
	for m := p.next(); m != nil; m = p.next() {
		if sz := proto.Size(m); sz > 64<<10+1024 {
			t.Fatalf("message of %d bytes", sz)
		}
		n += len(m.Upserts)
	}
	if n != 2000 {
		t.Fatalf("sent %d upserts, want 2000", n)
	}
}

func TestDeltaAssemblerAppliesWholeDeltas(t *testing.T) {
	v := newView()
	v.apply(&fedv1.SyncDelta{Revision: 5, Reset_: true, Exports: []*fedv1.ExportRecord{{Cluster: "east", Service: svc("default", "a", 80)}}})
	var asm deltaAssembler
	// A reset split in two: the view must not change until the last part.
	d, err := asm.add(&fedv1.SyncDelta{Reset_: true, Exports: []*fedv1.ExportRecord{{Cluster: "east", Service: svc("default", "b", 80)}}})
	if err != nil || d != nil {
		t.Fatalf("first part: %v %v", d, err)
	}
	d, err = asm.add(&fedv1.SyncDelta{Reset_: true, Revision: 9, Exports: []*fedv1.ExportRecord{{Cluster: "west", Service: svc("default", "b", 80)}}})
	if err != nil || d == nil {
		t.Fatalf("last part: %v %v", d, err)
	}
	v.apply(d)
	if v.revision != 9 || len(v.exports) != 2 {
		t.Fatalf("view rev %d exports %v", v.revision, v.exports)
	}
	b, err := encodeView(v)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeView(b)
	if err != nil || back.revision != 9 || len(back.exports) != 2 {
		t.Fatalf("decode: %v %+v", err, back)
	}
	b[4] = 99
	if _, err := decodeView(b); err == nil {
		t.Fatal("decoded an unknown format version")
	}
}

func TestPlanImportsOldestWins(t *testing.T) {
	v := newView()
	v.apply(&fedv1.SyncDelta{Revision: 3, Reset_: true, Exports: []*fedv1.ExportRecord{
		{Cluster: "west", Service: svc("default", "r", 9090), CreateRevision: 7},
		{Cluster: "east", Service: svc("default", "r", 8080), CreateRevision: 4},
	}})
	plans, conflicts := planImports("west", v)
	p := plans["default/r"]
	if p == nil || p.Clusters[0].Cluster != "east" || p.Ports[0].GetPort() != 8080 || len(p.Ports) != 1 {
		t.Fatalf("plan %+v", p)
	}
	if c := conflicts["default/r"]; !strings.Contains(c.Message, "east") || c.Reason != "PortConflict" {
		t.Fatalf("conflicts %v, want west's export to lose to east", conflicts)
	}
	// east, the oldest, shows the conflict too, and wins.
	if _, c := planImports("east", v); c["default/r"].Reason != "PortConflict" || !strings.Contains(c["default/r"].Message, "west") {
		t.Fatalf("east conflicts %v, want PortConflict naming west", c)
	}
}

func TestParseFileCatalogFieldPaths(t *testing.T) {
	for _, tc := range []struct{ doc, field string }{
		{"services:\n- {namespace: default, name: a, ports: [{port: 80, protocol: QUIC}]}\n", "services[0].ports[0].protocol"},
		{"services:\n- {namespace: Default, name: a, ports: [{port: 80, protocol: TCP}]}\n", "services[0].service.namespace"},
		{"services:\n- {namespace: d, name: a, ports: [{port: 80, protocol: TCP}], endpoints: [{address: nope}]}\n", "services[0].endpoints[0].address"},
		{"services:\n- {namespace: d, name: a, ports: [{port: 0, protocol: TCP}]}\n", "services[0].ports[0].port"},
	} {
		_, err := ParseFileCatalog([]byte(tc.doc))
		var fe *federation.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%q: %v, want a FieldError on %s", tc.doc, err, tc.field)
		}
	}
	if _, err := ParseFileCatalog([]byte("services: []\nextra: 1\n")); err == nil {
		t.Error("unknown key accepted")
	}
	c, err := ParseFileCatalog([]byte(reviewsCatalog))
	if err != nil {
		t.Fatal(err)
	}
	e := c.catalog().exports["default/reviews"]
	if e == nil || len(e.Endpoints) != 1 || e.Endpoints[0].GetReady() != 1 || e.Endpoints[0].GetServing() != 1 {
		t.Fatalf("export %v", e)
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Source = SourceKubernetes
	cfg.EgressPortMin = 0
	cfg.GatewaySelector = "a in (b"
	cfg.GatewayServiceAccount = "Not_A_Name"
	err := cfg.Validate()
	for _, f := range []string{"cluster", "data_dir", "gateway_selector", "gateway_service_account", "egress_ports"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("error %v does not name %s", err, f)
		}
	}
	if _, _, err := ParseSource("file:"); err == nil {
		t.Error("empty file path accepted")
	}
}

// Connected holds only while the hub server spoke within the bound: every
// message renews it, silence past the bound ends it, in /state and the
// metric alike. Driven through many bounds on the fake clock.
func TestConnectedOnlyWithinTheHeartbeatBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Cluster = federation.MustClusterName("east")
		cfg.DataDir = t.TempDir()
		cfg.Source = SourceFile
		cfg.SourcePath = filepath.Join(cfg.DataDir, "catalog.yaml")
		var err error
		if cfg.Locality, err = federation.NewLocality("r1", "z1", ""); err != nil {
			t.Fatal(err)
		}
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		const bound = 6 * time.Second
		a.setConnected(true, "s0")
		for i := range 50 {
			a.heard(time.Now(), bound)
			time.Sleep(bound)
			if st := a.State().Hub; !st.Connected || st.LastHeardAgoMs != bound.Milliseconds() {
				t.Fatalf("period %d: at the bound: connected %v, heard %d ms ago; want connected", i, st.Connected, st.LastHeardAgoMs)
			}
			if !a.connectedMetric() {
				t.Fatalf("period %d: meshfed_agent_hub_connected is 0 at the bound", i)
			}
		}
		time.Sleep(time.Millisecond)
		if st := a.State().Hub; st.Connected || st.HeartbeatBoundMs != bound.Milliseconds() {
			t.Fatalf("past the bound: connected %v (bound %d ms); want disconnected", st.Connected, st.HeartbeatBoundMs)
		}
		if a.connectedMetric() {
			t.Fatal("meshfed_agent_hub_connected is 1 past the bound")
		}
		// An older hub sends no heartbeats: connected while the stream is.
		a.heard(time.Now(), 0)
		time.Sleep(time.Hour)
		if !a.State().Hub.Connected {
			t.Fatal("without heartbeats, a synced stream an hour old is not connected")
		}
	})
}

// connectedMetric reads meshfed_agent_hub_connected.
func (a *Agent) connectedMetric() bool {
	mfs, err := a.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "meshfed_agent_hub_connected" {
			return mf.GetMetric()[0].GetGauge().GetValue() == 1
		}
	}
	panic("no meshfed_agent_hub_connected")
}

// What HTTP, DNS and the gateway stream read is one immutable snapshot:
// a value loaded before a change keeps showing the state before it, whole,
// and readers never block on a writer. Many writers and readers at once
// see only whole states (each writer's two fields change together).
func TestStatusIsAnImmutableSnapshotSwappedWhole(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cluster = federation.MustClusterName("east")
	cfg.DataDir = t.TempDir()
	cfg.Source = SourceFile
	cfg.SourcePath = filepath.Join(cfg.DataDir, "catalog.yaml")
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := a.status()
	a.setConnected(true, "s0")
	a.update(func(s *agentStatus) {
		s.desired = map[string]*fedv1.ExportedService{"default/a": {Namespace: "default", Name: "a"}}
	})
	if before.connected || before.server != "" || before.desired != nil {
		t.Fatalf("a loaded status changed after it was loaded: %+v", before)
	}
	if now := a.status(); !now.connected || now.server != "s0" || len(now.desired) != 1 {
		t.Fatalf("status after the writes: %+v", now)
	}

	// A reader holding a status while a writer changes it: the writer does
	// not wait for the reader, and the reader's value stays whole.
	held := a.status()
	done := make(chan struct{})
	go func() { a.setErr(errors.New("boom")); close(done) }()
	<-done
	if held.lastErr != "" || a.status().lastErr != "boom" {
		t.Fatalf("held lastErr %q, current %q", held.lastErr, a.status().lastErr)
	}

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				server := fmt.Sprintf("w%d-%d", w, i)
				a.update(func(s *agentStatus) { s.server, s.lastErr = server, server })
			}
		}()
	}
	stop := make(chan struct{})
	var torn atomic.Int64
	var rg sync.WaitGroup
	rg.Add(1)
	go func() {
		defer rg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s := a.status(); s.server != s.lastErr && s.server != "s0" {
				torn.Add(1)
			}
		}
	}()
	wg.Wait()
	close(stop)
	rg.Wait()
	if n := torn.Load(); n > 0 {
		t.Fatalf("%d reads saw half of a change", n)
	}
}
