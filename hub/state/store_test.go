package state_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

func svc(ns, name string, ready uint32) *fedv1.ExportedService {
	return &fedv1.ExportedService{
		Namespace: ns, Name: name,
		Ports:     []*fedv1.ServicePort{{Name: "http", Port: 8080, Protocol: "HTTP"}},
		Endpoints: []*fedv1.EndpointGroup{{Zone: "z1", Ready: ready, Serving: ready}},
	}
}

func cluster(name, region string) *fedv1.ClusterRecord {
	return &fedv1.ClusterRecord{Name: name, TrustDomain: name + ".meshfed.local", Locality: &fedv1.Locality{Region: region}}
}

// write runs fn in one write transaction at rev and commits it.
func write(t testing.TB, s *state.Store, rev uint64, fn func(w *state.WriteTxn)) {
	t.Helper()
	w := s.Write(rev)
	fn(w)
	w.Commit()
}

// closed reports whether ch is closed, without blocking.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestPutStampsRevisions(t *testing.T) {
	s := state.New()
	in := cluster("east", "us-east1")
	write(t, s, 5, func(w *state.WriteTxn) {
		w.PutCluster(in)
		mustPutExport(t, w, "east", svc("shop", "cart", 1))
		w.PutBundle(&hubpb.BundleRecord{Cluster: "east", Bundle: &fedv1.TrustBundle{TrustDomain: "east.meshfed.local", SequenceNumber: 1}})
		w.PutPolicy(&fedv1.TrafficPolicy{Name: "p", Service: "shop/cart"})
	})
	if in.GetCreateRevision() != 0 || in.GetModifyRevision() != 0 {
		t.Errorf("PutCluster modified its argument: create=%d modify=%d", in.GetCreateRevision(), in.GetModifyRevision())
	}
	write(t, s, 9, func(w *state.WriteTxn) {
		w.PutCluster(cluster("east", "us-west1"))
		mustPutExport(t, w, "east", svc("shop", "cart", 2))
		w.PutBundle(&hubpb.BundleRecord{Cluster: "east", Bundle: &fedv1.TrustBundle{TrustDomain: "east.meshfed.local", SequenceNumber: 2}})
		w.PutPolicy(&fedv1.TrafficPolicy{Name: "p", Service: "shop/cart", Spec: []byte("eu")})
	})
	r := s.Read()
	if got := r.Revision(); got != 9 {
		t.Errorf("Revision() = %d, want 9", got)
	}
	check := func(what string, create, modify uint64) {
		t.Helper()
		if create != 5 || modify != 9 {
			t.Errorf("%s: create_revision=%d modify_revision=%d, want 5 and 9", what, create, modify)
		}
	}
	c := r.Cluster("east")
	check("cluster", c.GetCreateRevision(), c.GetModifyRevision())
	if c.GetLocality().GetRegion() != "us-west1" {
		t.Errorf("cluster not updated: %v", c)
	}
	e := r.Export(xid("east", "shop/cart"))
	check("export", e.GetCreateRevision(), e.GetModifyRevision())
	if e.GetService().GetEndpoints()[0].GetReady() != 2 {
		t.Errorf("export not updated: %v", e)
	}
	b := r.Bundle("east.meshfed.local")
	check("bundle", b.GetCreateRevision(), b.GetModifyRevision())
	p := r.Policy("p")
	check("policy", p.GetCreateRevision(), p.GetModifyRevision())
}

func TestChangesReturnsOnlyLaterChanges(t *testing.T) {
	s := state.New()
	write(t, s, 1, func(w *state.WriteTxn) {
		w.PutCluster(cluster("east", "r1"))
		w.PutCluster(cluster("west", "r2"))
		mustPutExport(t, w, "east", svc("shop", "cart", 1))
		mustPutExport(t, w, "east", svc("shop", "pay", 1))
		w.PutPolicy(&fedv1.TrafficPolicy{Name: "old", Service: "shop/cart"})
	})
	write(t, s, 2, func(w *state.WriteTxn) {
		mustPutExport(t, w, "east", svc("shop", "cart", 3))
	})
	write(t, s, 4, func(w *state.WriteTxn) {
		if !w.DeleteExport(xid("east", "shop/pay")) {
			t.Error("DeleteExport(existing) = false")
		}
		if w.DeleteExport(xid("east", "shop/nope")) {
			t.Error("DeleteExport(missing) = true")
		}
		w.DeletePolicy("old")
		w.PutPolicy(&fedv1.TrafficPolicy{Name: "new", Service: "shop/pay"})
	})
	r := s.Read()

	d := r.Changes(1)
	if d.Reset || d.Revision != 4 {
		t.Fatalf("Changes(1): Reset=%v Revision=%d, want false and 4", d.Reset, d.Revision)
	}
	if len(d.Clusters) != 0 {
		t.Errorf("Changes(1).Clusters = %v, want none (unchanged since 1)", d.Clusters)
	}
	if len(d.Exports) != 1 || d.Exports[0].GetService().GetName() != "cart" {
		t.Errorf("Changes(1).Exports = %v, want only cart", d.Exports)
	}
	if len(d.Policies) != 1 || d.Policies[0].GetName() != "new" {
		t.Errorf("Changes(1).Policies = %v, want only new", d.Policies)
	}
	wantRemoved := map[string][]string{
		state.TablePolicies: {"old"},
	}
	if !mapsEqual(d.Removed, wantRemoved) {
		t.Errorf("Changes(1).Removed = %v, want %v", d.Removed, wantRemoved)
	}
	if want := []state.ExportID{xid("east", "shop/pay")}; !slices.Equal(d.RemovedExports, want) {
		t.Errorf("Changes(1).RemovedExports = %v, want %v", d.RemovedExports, want)
	}

	d = r.Changes(2)
	if len(d.Exports) != 0 || len(d.Policies) != 1 || len(d.RemovedExports) != 1 {
		t.Errorf("Changes(2) = %+v, want only the revision-4 changes", d)
	}
	// A revision between two commits sees the later one.
	if d3 := r.Changes(3); !deltaEqual(d, d3) {
		t.Errorf("Changes(3) = %+v, want same as Changes(2) %+v", d3, d)
	}
	if d := r.Changes(4); !d.Empty() || d.Reset {
		t.Errorf("Changes(4) = %+v, want empty", d)
	}
}

func TestChangesReset(t *testing.T) {
	s := state.New()
	write(t, s, 3, func(w *state.WriteTxn) {
		w.PutCluster(cluster("east", "r1"))
		mustPutExport(t, w, "east", svc("shop", "cart", 1))
		mustPutExport(t, w, "east", svc("shop", "pay", 1))
		w.PutBundle(&hubpb.BundleRecord{Cluster: "east", Bundle: &fedv1.TrustBundle{TrustDomain: "east.meshfed.local"}})
		w.PutPolicy(&fedv1.TrafficPolicy{Name: "p"})
	})
	write(t, s, 7, func(w *state.WriteTxn) { w.DeleteExport(xid("east", "shop/pay")) })
	r := s.Read()
	for _, since := range []uint64{0, 8, 1 << 40} {
		d := r.Changes(since)
		if !d.Reset || d.Revision != 7 {
			t.Errorf("Changes(%d): Reset=%v Revision=%d, want true and 7", since, d.Reset, d.Revision)
		}
		if len(d.Clusters) != 1 || len(d.Exports) != 1 || len(d.Bundles) != 1 || len(d.Policies) != 1 {
			t.Errorf("Changes(%d) = %+v, want the full current state", since, d)
		}
		if len(d.Removed) != 0 {
			t.Errorf("Changes(%d).Removed = %v, want none in a full snapshot", since, d.Removed)
		}
		if d.Empty() {
			t.Errorf("Changes(%d).Empty() = true for a reset", since)
		}
	}
	if d := state.New().Read().Changes(0); !d.Reset || d.Empty() {
		t.Errorf("empty store Changes(0) = %+v, want a (empty) reset that is not Empty()", d)
	}
}

func TestChangesResetBelowTombstoneFloor(t *testing.T) {
	const extra = 10
	n := state.MaxTombstones + extra
	s := state.New()
	keys := make([]string, n)
	write(t, s, 1, func(w *state.WriteTxn) {
		w.PutCluster(cluster("east", "r1"))
		for i := range keys {
			keys[i] = fmt.Sprintf("ns/s%05d", i)
			mustPutExport(t, w, "east", svc("ns", fmt.Sprintf("s%05d", i), 1))
		}
	})
	// The first deletes are the oldest tombstones; they get pruned when the
	// second batch pushes the count over MaxTombstones.
	write(t, s, 2, func(w *state.WriteTxn) {
		for _, k := range keys[:extra] {
			w.DeleteExport(xid("east", k))
		}
	})
	if got := s.Read().TombstoneFloor(); got != 0 {
		t.Fatalf("TombstoneFloor() = %d before the limit, want 0", got)
	}
	write(t, s, 3, func(w *state.WriteTxn) {
		for _, k := range keys[extra:] {
			w.DeleteExport(xid("east", k))
		}
	})
	r := s.Read()
	if got := r.TombstoneFloor(); got != 2 {
		t.Errorf("TombstoneFloor() = %d, want 2 (revision of the pruned tombstones)", got)
	}
	tombs := r.Tombstones()
	if len(tombs) != state.MaxTombstones {
		t.Errorf("len(Tombstones()) = %d, want %d", len(tombs), state.MaxTombstones)
	}
	for _, tb := range tombs {
		if tb.GetRevision() != 3 {
			t.Fatalf("kept tombstone %v; the oldest (revision 2) should have been pruned", tb)
		}
	}
	if d := r.Changes(1); !d.Reset {
		t.Errorf("Changes(1) below floor 2: Reset=false, want a full snapshot")
	}
	d := r.Changes(2)
	if d.Reset {
		t.Fatalf("Changes(2) at the floor: Reset=true, want a delta")
	}
	if got := len(d.RemovedExports); got != state.MaxTombstones {
		t.Errorf("Changes(2) removed %d exports, want %d", got, state.MaxTombstones)
	}

	// Pruning keeps working: one more delete drops exactly one tombstone.
	write(t, s, 4, func(w *state.WriteTxn) { w.DeleteCluster("east") })
	r = s.Read()
	if got := len(r.Tombstones()); got != state.MaxTombstones {
		t.Errorf("after one more delete len(Tombstones()) = %d, want %d", got, state.MaxTombstones)
	}
	if got := r.TombstoneFloor(); got != 3 {
		t.Errorf("TombstoneFloor() = %d, want 3", got)
	}
	if d := r.Changes(2); !d.Reset {
		t.Errorf("Changes(2) below the new floor 3: Reset=false, want a full snapshot")
	}
}

func TestRecreateClearsTombstone(t *testing.T) {
	s := state.New()
	write(t, s, 1, func(w *state.WriteTxn) {
		w.PutCluster(cluster("east", "r1"))
		mustPutExport(t, w, "east", svc("shop", "cart", 1))
	})
	write(t, s, 2, func(w *state.WriteTxn) { w.DeleteExport(xid("east", "shop/cart")) })
	r := s.Read()
	if got := r.Tombstones(); len(got) != 1 || got[0].GetTable() != state.TableExports ||
		got[0].GetKey() != xid("east", "shop/cart").String() || got[0].GetRevision() != 2 {
		t.Fatalf("Tombstones() = %v, want one for exports east/shop/cart at 2", got)
	}
	if r.Export(xid("east", "shop/cart")) != nil {
		t.Fatal("deleted export still readable")
	}
	write(t, s, 3, func(w *state.WriteTxn) { mustPutExport(t, w, "east", svc("shop", "cart", 2)) })
	r = s.Read()
	if got := r.Tombstones(); len(got) != 0 {
		t.Errorf("Tombstones() = %v after re-creating, want none", got)
	}
	e := r.Export(xid("east", "shop/cart"))
	if e.GetCreateRevision() != 3 || e.GetModifyRevision() != 3 {
		t.Errorf("re-created export revisions = %d/%d, want 3/3 (a new export)", e.GetCreateRevision(), e.GetModifyRevision())
	}
	d := r.Changes(1)
	if len(d.Removed) != 0 || len(d.Exports) != 1 {
		t.Errorf("Changes(1) = %+v, want the re-created export and no removal", d)
	}
}

func TestWatchClosesOnlyOnChange(t *testing.T) {
	s := state.New()
	ch := s.Watch()

	w := s.Write(1)
	w.Commit() // nothing written
	if closed(ch) {
		t.Fatal("Watch closed by an empty commit")
	}
	write(t, s, 2, func(w *state.WriteTxn) {
		if w.DeleteExport(xid("east", "shop/cart")) {
			t.Error("DeleteExport of a missing key reported true")
		}
	})
	if closed(ch) {
		t.Fatal("Watch closed by a commit that deleted nothing")
	}
	w = s.Write(3)
	w.PutCluster(cluster("east", "r1"))
	w.Abort()
	if closed(ch) {
		t.Fatal("Watch closed by an aborted transaction")
	}
	if got := s.Read().Revision(); got != 0 {
		t.Fatalf("Revision() = %d after no-op and aborted transactions, want 0", got)
	}
	if s.Read().Cluster("east") != nil {
		t.Fatal("aborted write is visible")
	}

	write(t, s, 4, func(w *state.WriteTxn) { w.PutCluster(cluster("east", "r1")) })
	if !closed(ch) {
		t.Fatal("Watch not closed by a commit")
	}
	next := s.Watch()
	if closed(next) {
		t.Fatal("Watch after a commit returned a closed channel")
	}
	write(t, s, 5, func(w *state.WriteTxn) { w.PutToken(&hubpb.Token{Id: "t1"}) })
	if !closed(next) {
		t.Fatal("Watch not closed by a token write")
	}
}

func TestAbandonWakesWatchers(t *testing.T) {
	s := state.New()
	ch := s.Watch()
	if closed(s.Abandoned()) {
		t.Fatal("new store reports Abandoned")
	}
	s.Abandon()
	if !closed(ch) {
		t.Error("Abandon did not close Watch")
	}
	if !closed(s.Abandoned()) {
		t.Error("Abandon did not close Abandoned")
	}
	s.Abandon() // idempotent: must not panic on a double close
}

// A reader that fetched the store just before a restore and calls Watch just
// after it must not block forever: the old store never commits again.
func TestWatchAfterAbandonIsClosed(t *testing.T) {
	s := state.New()
	s.Abandon()
	if !closed(s.Watch()) {
		t.Error("Watch() on an abandoned store returned an open channel; it will never close, " +
			"so a reader that raced with a restore sleeps forever (hub/certs.go run loop)")
	}
}

func TestReadViewIsImmutable(t *testing.T) {
	s := state.New()
	write(t, s, 1, func(w *state.WriteTxn) {
		w.PutCluster(cluster("east", "r1"))
		mustPutExport(t, w, "east", svc("shop", "cart", 1))
	})
	before := s.Read()
	write(t, s, 2, func(w *state.WriteTxn) {
		w.PutCluster(cluster("west", "r2"))
		mustPutExport(t, w, "east", svc("shop", "cart", 7))
		w.DeleteCluster("east")
	})
	if got := before.Revision(); got != 1 {
		t.Errorf("old view Revision() = %d, want 1", got)
	}
	if before.Cluster("west") != nil {
		t.Error("old view sees a cluster created later")
	}
	if before.Cluster("east") == nil {
		t.Error("old view lost a cluster deleted later")
	}
	if got := before.Export(xid("east", "shop/cart")).GetService().GetEndpoints()[0].GetReady(); got != 1 {
		t.Errorf("old view export ready = %d, want 1", got)
	}
	if d := before.Changes(1); !d.Empty() {
		t.Errorf("old view Changes(1) = %+v, want empty", d)
	}
	after := s.Read()
	if after.Cluster("west") == nil || after.Cluster("east") != nil || after.Revision() != 2 {
		t.Error("new view does not show the write")
	}
}

// refExport is the naive reference model of one export.
type refExport struct {
	svc            *fedv1.ExportedService
	create, modify uint64
}

type refState map[state.ExportID]refExport

func (m refState) clone() refState {
	c := make(refState, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// TestChangesProperty checks, for random histories of puts and deletes, that
// a client holding the state at revision r and applying Changes(r) reaches
// the current state, and that the store agrees with a naive map.
func TestChangesProperty(t *testing.T) {
	clusters := []string{"a", "b", "c"}
	services := []string{"ns/s0", "ns/s1", "ns/s2", "other/s3"}
	for seq := range 200 {
		rng := rand.New(rand.NewPCG(uint64(seq), 0x5eed))
		s := state.New()
		ref := refState{}
		revs := []uint64{0}
		hist := map[uint64]refState{0: {}}
		rev := uint64(0)
		for range 1 + rng.IntN(40) {
			rev += 1 + uint64(rng.IntN(3)) // not every Raft index changes the store
			w := s.Write(rev)
			dirty := false
			for range 1 + rng.IntN(4) {
				c := clusters[rng.IntN(len(clusters))]
				name := services[rng.IntN(len(services))]
				key := xid(c, name)
				if rng.IntN(3) == 0 {
					deleted := w.DeleteExport(key)
					if _, ok := ref[key]; ok != deleted {
						t.Fatalf("seq %d rev %d: DeleteExport(%s) = %v, reference has it: %v", seq, rev, key, deleted, ok)
					}
					if deleted {
						delete(ref, key)
						dirty = true
					}
					continue
				}
				ns, n, _ := strings.Cut(name, "/")
				x := svc(ns, n, uint32(rng.IntN(5)))
				mustPutExport(t, w, c, x)
				old, ok := ref[key]
				create := rev
				if ok {
					create = old.create
				}
				ref[key] = refExport{svc: x, create: create, modify: rev}
				dirty = true
			}
			w.Commit()
			if dirty {
				revs = append(revs, rev)
				hist[rev] = ref.clone()
			}
		}
		cur := s.Read()
		if got, want := cur.Revision(), revs[len(revs)-1]; got != want {
			t.Fatalf("seq %d: Revision() = %d, want %d", seq, got, want)
		}
		if err := sameAsRef(cur.Exports(), ref); err != nil {
			t.Fatalf("seq %d: store differs from reference: %v", seq, err)
		}
		for range 10 {
			r := uint64(rng.IntN(int(rev) + 3))
			// The client's state at r is the last committed state at or before r.
			i, found := slices.BinarySearch(revs, r)
			if !found {
				i--
			}
			client := hist[revs[i]].clone()
			d := cur.Changes(r)
			if wantReset := r == 0 || r > cur.Revision(); d.Reset != wantReset {
				t.Fatalf("seq %d: Changes(%d).Reset = %v, want %v", seq, r, d.Reset, wantReset)
			}
			if d.Reset {
				client = refState{}
			}
			for _, e := range d.Exports {
				if !d.Reset && e.GetModifyRevision() <= r {
					t.Errorf("seq %d: Changes(%d) carries %v, unchanged since %d", seq, r, e, e.GetModifyRevision())
				}
				key, err := state.ExportIDOf(e)
				if err != nil {
					t.Fatal(err)
				}
				client[key] = refExport{svc: e.GetService(), create: e.GetCreateRevision(), modify: e.GetModifyRevision()}
			}
			for _, key := range d.RemovedExports {
				if _, ok := ref[key]; ok {
					t.Errorf("seq %d: Changes(%d) removes %s, which exists", seq, r, key)
				}
				delete(client, key)
			}
			if err := sameAsRef(cur.Exports(), client); err != nil {
				t.Fatalf("seq %d: state at %d + Changes(%d) != current: %v", seq, r, r, err)
			}
		}
	}
}

func sameAsRef(got []*fedv1.ExportRecord, ref refState) error {
	if len(got) != len(ref) {
		return fmt.Errorf("%d exports, reference has %d", len(got), len(ref))
	}
	for _, e := range got {
		key, err := state.ExportIDOf(e)
		if err != nil {
			return err
		}
		want, ok := ref[key]
		if !ok {
			return fmt.Errorf("export %s not in reference", key)
		}
		if !proto.Equal(e.GetService(), want.svc) || e.GetCreateRevision() != want.create || e.GetModifyRevision() != want.modify {
			return fmt.Errorf("export %s = %v (create %d, modify %d), reference %v (create %d, modify %d)",
				key, e.GetService(), e.GetCreateRevision(), e.GetModifyRevision(), want.svc, want.create, want.modify)
		}
	}
	return nil
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func deltaEqual(a, b *state.Delta) bool {
	if a.Reset != b.Reset || a.Revision != b.Revision || !mapsEqual(a.Removed, b.Removed) {
		return false
	}
	return slices.EqualFunc(a.Clusters, b.Clusters, func(x, y *fedv1.ClusterRecord) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.Exports, b.Exports, func(x, y *fedv1.ExportRecord) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.Bundles, b.Bundles, func(x, y *hubpb.BundleRecord) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.Policies, b.Policies, func(x, y *fedv1.TrafficPolicy) bool { return proto.Equal(x, y) })
}

// xid is the ID of cluster's export of service (namespace/name).
func xid(cluster, service string) state.ExportID {
	return state.ExportID{Cluster: federation.MustClusterName(cluster), Service: federation.MustServiceKey(service)}
}

func mustPutExport(t testing.TB, w *state.WriteTxn, cluster string, svc *fedv1.ExportedService) {
	t.Helper()
	if err := w.PutExport(federation.MustClusterName(cluster), svc); err != nil {
		t.Fatal(err)
	}
}
