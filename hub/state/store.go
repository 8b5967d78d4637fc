package state

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	memdb "github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// MaxTombstones bounds the tombstones kept for resuming Sync streams. When
// exceeded the oldest are dropped and the tombstone floor rises; a stream that
// resumes from below the floor gets a full snapshot instead of a delta.
const MaxTombstones = 20000

const (
	metaRevision = "revision"
	metaFloor    = "tombstone_floor"
	metaCA       = "ca"
	metaTombs    = "tombstone_count"
	// metaExportBytes + cluster: the cluster's exported services' encoded
	// size together. Derived from the exports, so not in snapshots: a
	// restore recounts it.
	metaExportBytes = "export_bytes/"
)

// Store is the state store. It is safe for concurrent use: one writer (the
// FSM) and any number of readers.
type Store struct {
	db *memdb.MemDB

	mu        sync.Mutex
	watch     chan struct{}
	abandoned chan struct{}

	// requests orders TableRequests oldest first (requests.go).
	requests requestLog
}

// New returns an empty store.
func New() *Store {
	return &Store{db: mustDB(), watch: make(chan struct{}), abandoned: make(chan struct{})}
}

// Watch returns a channel that is closed at the next commit or when the store
// is abandoned (replaced by a snapshot restore).
func (s *Store) Watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watch
}

// Abandoned is closed once the store has been replaced by a restore. Readers
// holding it must fetch the current store again.
func (s *Store) Abandoned() <-chan struct{} { return s.abandoned }

// Abandon marks the store replaced and wakes all watchers.
func (s *Store) Abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.abandoned:
	default:
		// Both stay closed: every later Watch on this store returns at once.
		close(s.abandoned)
		close(s.watch)
	}
}

func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.abandoned:
		return // watch is closed for good
	default:
	}
	close(s.watch)
	s.watch = make(chan struct{})
}

// Read returns an immutable view of the store as of now.
func (s *Store) Read() *ReadTxn { return &ReadTxn{txn: s.db.Txn(false)} }

// Write opens the single write transaction for a change at revision rev (the
// Raft index). Call Commit or Abort.
func (s *Store) Write(rev uint64) *WriteTxn {
	return &WriteTxn{ReadTxn: ReadTxn{txn: s.db.Txn(true)}, store: s, rev: rev}
}

// ReadTxn is a consistent view of the store.
type ReadTxn struct{ txn *memdb.Txn }

func (r *ReadTxn) get(table, key string) *row {
	raw, err := r.txn.First(table, "id", key)
	if err != nil {
		panic(err) // only on a schema mismatch, a programming error
	}
	if raw == nil {
		return nil
	}
	return raw.(*row)
}

func (r *ReadTxn) all(table, index string, args ...any) []*row {
	it, err := r.txn.Get(table, index, args...)
	if err != nil {
		panic(err)
	}
	var out []*row
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*row))
	}
	return out
}

func (r *ReadTxn) since(table string, rev uint64) []*row {
	it, err := r.txn.LowerBound(table, "revision", rev+1)
	if err != nil {
		panic(err)
	}
	var out []*row
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*row))
	}
	return out
}

func (r *ReadTxn) metaUint(key string) uint64 {
	return value[uint64](r.get(TableMeta, key))
}

// Revision is the Raft index of the last change.
func (r *ReadTxn) Revision() uint64 { return r.metaUint(metaRevision) }

// TombstoneFloor is the highest revision whose tombstones were dropped.
func (r *ReadTxn) TombstoneFloor() uint64 { return r.metaUint(metaFloor) }

// CA returns the hub CA, or nil before the first leader created it.
func (r *ReadTxn) CA() *hubpb.CAState {
	return value[*hubpb.CAState](r.get(TableMeta, metaCA))
}

// Token returns a join token by ID, or nil.
func (r *ReadTxn) Token(id string) *hubpb.Token {
	return value[*hubpb.Token](r.get(TableTokens, id))
}

// Tokens returns every token, sorted by ID.
func (r *ReadTxn) Tokens() []*hubpb.Token {
	return values[*hubpb.Token](r.all(TableTokens, "id"))
}

// Cluster returns a member cluster by name, or nil.
func (r *ReadTxn) Cluster(name string) *fedv1.ClusterRecord {
	return value[*fedv1.ClusterRecord](r.get(TableClusters, name))
}

// Clusters returns every member cluster, sorted by name.
func (r *ReadTxn) Clusters() []*fedv1.ClusterRecord {
	return values[*fedv1.ClusterRecord](r.all(TableClusters, "id"))
}

// Export returns one cluster's export of a service, or nil.
func (r *ReadTxn) Export(id ExportID) *fedv1.ExportRecord {
	return value[*fedv1.ExportRecord](r.get(TableExports, id.String()))
}

// Exports returns every export, sorted by cluster then service.
func (r *ReadTxn) Exports() []*fedv1.ExportRecord {
	return values[*fedv1.ExportRecord](r.all(TableExports, "id"))
}

// ExportsOf returns a cluster's exports.
func (r *ReadTxn) ExportsOf(cluster federation.ClusterName) []*fedv1.ExportRecord {
	return values[*fedv1.ExportRecord](r.all(TableExports, "cluster", cluster.String()))
}

// ExportBytes is the encoded size (proto.Size) of cluster's exported
// services together.
func (r *ReadTxn) ExportBytes(cluster federation.ClusterName) uint64 {
	return r.metaUint(metaExportBytes + cluster.String())
}

// ExportsFor returns every cluster's export of one service.
func (r *ReadTxn) ExportsFor(service federation.ServiceKey) []*fedv1.ExportRecord {
	return values[*fedv1.ExportRecord](r.all(TableExports, "service", service.String()))
}

// Bundle returns the bundle of a trust domain, or nil.
func (r *ReadTxn) Bundle(td string) *hubpb.BundleRecord {
	return value[*hubpb.BundleRecord](r.get(TableBundles, td))
}

// Bundles returns every trust bundle, sorted by trust domain.
func (r *ReadTxn) Bundles() []*hubpb.BundleRecord {
	return values[*hubpb.BundleRecord](r.all(TableBundles, "id"))
}

// Policy returns a traffic policy by name, or nil.
func (r *ReadTxn) Policy(name string) *fedv1.TrafficPolicy {
	return value[*fedv1.TrafficPolicy](r.get(TablePolicies, name))
}

// PoliciesFor returns the traffic policies of one service (namespace/name),
// sorted by name: at most one unless older logs stored more (PutPolicy
// applied before ApplyPolicies enforced one policy per host).
func (r *ReadTxn) PoliciesFor(service string) []*fedv1.TrafficPolicy {
	return values[*fedv1.TrafficPolicy](r.all(TablePolicies, "service", service))
}

// Policies returns every traffic policy, sorted by name.
func (r *ReadTxn) Policies() []*fedv1.TrafficPolicy {
	return values[*fedv1.TrafficPolicy](r.all(TablePolicies, "id"))
}

// Federation returns the relationship with an external trust domain, or nil.
func (r *ReadTxn) Federation(td string) *fedv1.FederationRelationship {
	return value[*fedv1.FederationRelationship](r.get(TableFederations, td))
}

// Federations returns every relationship, sorted by trust domain.
func (r *ReadTxn) Federations() []*fedv1.FederationRelationship {
	return values[*fedv1.FederationRelationship](r.all(TableFederations, "id"))
}

// BundleAck returns the newest sequence of trust domain td's bundle that
// member acknowledged, or nil.
func (r *ReadTxn) BundleAck(member, td string) *hubpb.BundleAck {
	return value[*hubpb.BundleAck](r.get(TableBundleAcks, bundleAckKey(member, td)))
}

// BundleAcks returns every bundle ack, sorted by member then trust domain.
func (r *ReadTxn) BundleAcks() []*hubpb.BundleAck {
	return values[*hubpb.BundleAck](r.all(TableBundleAcks, "id"))
}

// BundleAcksFor returns the acks of trust domain td's bundle, by member.
func (r *ReadTxn) BundleAcksFor(td string) map[string]*hubpb.BundleAck {
	out := map[string]*hubpb.BundleAck{}
	for _, a := range values[*hubpb.BundleAck](r.all(TableBundleAcks, "trust_domain", td)) {
		out[a.GetCluster()] = a
	}
	return out
}

// ConnectionsOf returns the connection leases of a cluster, one per hub
// server that renewed one, expired or not.
func (r *ReadTxn) ConnectionsOf(cluster string) []*hubpb.ClusterConnection {
	return values[*hubpb.ClusterConnection](r.all(TableConnections, "cluster", cluster))
}

// ConnectionsBy returns the connection leases one hub server holds.
func (r *ReadTxn) ConnectionsBy(server string) []*hubpb.ClusterConnection {
	return values[*hubpb.ClusterConnection](r.all(TableConnections, "server", server))
}

// GatewayPolicies returns the policy statuses of a cluster's gateway
// replicas, or nil.
func (r *ReadTxn) GatewayPolicies(cluster string) *hubpb.ClusterGatewayPolicies {
	return value[*hubpb.ClusterGatewayPolicies](r.get(TableGatewayPolicies, cluster))
}

// AllGatewayPolicies returns every cluster's gateway policy statuses,
// sorted by cluster.
func (r *ReadTxn) AllGatewayPolicies() []*hubpb.ClusterGatewayPolicies {
	return values[*hubpb.ClusterGatewayPolicies](r.all(TableGatewayPolicies, "id"))
}

// Connections returns every connection lease, sorted by cluster then server.
func (r *ReadTxn) Connections() []*hubpb.ClusterConnection {
	return values[*hubpb.ClusterConnection](r.all(TableConnections, "id"))
}

// Request returns the recorded outcome of a request by ID, or nil.
func (r *ReadTxn) Request(id string) *hubpb.RequestRecord {
	return value[*hubpb.RequestRecord](r.get(TableRequests, id))
}

// Requests returns every recorded request, sorted by ID.
func (r *ReadTxn) Requests() []*hubpb.RequestRecord {
	return values[*hubpb.RequestRecord](r.all(TableRequests, "id"))
}

// Tombstones returns every tombstone, sorted by key.
func (r *ReadTxn) Tombstones() []*hubpb.Tombstone {
	return values[*hubpb.Tombstone](r.all(TableTombstones, "id"))
}

// Delta is what changed in the streamed tables (clusters, exports, bundles,
// policies) after a revision.
type Delta struct {
	Revision uint64
	// Reset is true when the delta is a full snapshot, because the requested
	// revision is below the tombstone floor or ahead of this store.
	Reset    bool
	Clusters []*fedv1.ClusterRecord
	Exports  []*fedv1.ExportRecord
	Bundles  []*hubpb.BundleRecord
	Policies []*fedv1.TrafficPolicy
	// Removed maps a table name to the keys deleted since the revision
	// (cluster names, trust domains, policy names); exports are in
	// RemovedExports.
	Removed map[string][]string
	// RemovedExports are the exports deleted since the revision.
	RemovedExports []ExportID
}

// Empty reports whether the delta carries no change.
func (d *Delta) Empty() bool {
	if d.Reset {
		return false
	}
	n := len(d.Clusters) + len(d.Exports) + len(d.Bundles) + len(d.Policies)
	for _, keys := range d.Removed {
		n += len(keys)
	}
	return n+len(d.RemovedExports) == 0
}

// Changes returns the delta after revision since. since == 0, since below the
// tombstone floor, or since ahead of the store all give a full snapshot.
func (r *ReadTxn) Changes(since uint64) *Delta {
	rev := r.Revision()
	d := &Delta{Revision: rev, Removed: map[string][]string{}}
	if since == 0 || since < r.TombstoneFloor() || since > rev {
		d.Reset = true
		d.Clusters = r.Clusters()
		d.Exports = r.Exports()
		d.Bundles = r.Bundles()
		d.Policies = r.Policies()
		return d
	}
	d.Clusters = values[*fedv1.ClusterRecord](r.since(TableClusters, since))
	d.Exports = values[*fedv1.ExportRecord](r.since(TableExports, since))
	d.Bundles = values[*hubpb.BundleRecord](r.since(TableBundles, since))
	d.Policies = values[*fedv1.TrafficPolicy](r.since(TablePolicies, since))
	for _, t := range values[*hubpb.Tombstone](r.since(TableTombstones, since)) {
		if t.GetTable() == TableExports {
			id, err := ParseExportID(t.GetKey())
			if err != nil {
				// DeleteExport and Restorer.Tombstone admit only keys
				// that parse, so this is a store that lies.
				panic(fmt.Sprintf("state: export tombstone: %v", err))
			}
			d.RemovedExports = append(d.RemovedExports, id)
			continue
		}
		d.Removed[t.GetTable()] = append(d.Removed[t.GetTable()], t.GetKey())
	}
	for _, keys := range d.Removed {
		sort.Strings(keys)
	}
	slices.SortFunc(d.RemovedExports, func(a, b ExportID) int { return strings.Compare(a.String(), b.String()) })
	return d
}

// value returns a row's value, or T's zero value for no row.
func value[T any](rw *row) T {
	if rw == nil {
		var zero T
		return zero
	}
	return rw.Value.(T)
}

func values[T any](rows []*row) []T {
	out := make([]T, 0, len(rows))
	for _, rw := range rows {
		out = append(out, rw.Value.(T))
	}
	return out
}

// WriteTxn is the write transaction of one Raft command.
type WriteTxn struct {
	ReadTxn
	store *Store
	rev   uint64
	// dirty: federation state changed (revision moves, watchers wake).
	dirty bool
	// booked: only bookkeeping changed (tables agents are not sent:
	// requests, connection leases, bundle acks, gateway policy statuses).
	booked bool
	// request: the change RecordRequest made to the store's requestLog,
	// applied at Commit.
	request *requestChange
}

// Rev is the revision this transaction writes at.
func (w *WriteTxn) Rev() uint64 { return w.rev }

func (w *WriteTxn) insert(table string, rw *row) {
	if err := w.txn.Insert(table, rw); err != nil {
		panic(err)
	}
	w.dirty = true
}

func (w *WriteTxn) remove(table, key string) bool {
	rw := w.get(table, key)
	if rw == nil {
		return false
	}
	if err := w.txn.Delete(table, rw); err != nil {
		panic(err)
	}
	w.dirty = true
	return true
}

// upsert inserts a streamed record and clears its tombstone.
func (w *WriteTxn) upsert(table string, rw *row) {
	rw.Rev = w.rev
	w.insert(table, rw)
	if w.remove(TableTombstones, tombKey(table, rw.Key)) {
		w.addTombs(-1)
	}
}

// delete removes a streamed record and leaves a tombstone.
func (w *WriteTxn) delete(table, key string) bool {
	if !w.remove(table, key) {
		return false
	}
	t := &hubpb.Tombstone{Table: table, Key: key, Revision: w.rev}
	w.insert(TableTombstones, &row{Key: tombKey(table, key), Rev: w.rev, Value: t})
	w.addTombs(1)
	return true
}

func (w *WriteTxn) addTombs(n int) {
	c := int(w.metaUint(metaTombs)) + n
	w.insert(TableMeta, &row{Key: metaTombs, Value: uint64(c)})
}

// SetCA stores the hub CA.
func (w *WriteTxn) SetCA(ca *hubpb.CAState) {
	w.insert(TableMeta, &row{Key: metaCA, Value: ca})
}

// PutToken stores a join token.
func (w *WriteTxn) PutToken(t *hubpb.Token) {
	w.insert(TableTokens, &row{Key: t.GetId(), Value: t})
}

// DeleteToken removes a join token.
func (w *WriteTxn) DeleteToken(id string) { w.remove(TableTokens, id) }

// PutCluster stores a member cluster, stamping its revisions.
func (w *WriteTxn) PutCluster(c *fedv1.ClusterRecord) {
	c = proto.Clone(c).(*fedv1.ClusterRecord)
	if old := w.Cluster(c.GetName()); old != nil {
		c.CreateRevision = old.GetCreateRevision()
	} else {
		c.CreateRevision = w.rev
	}
	c.ModifyRevision = w.rev
	w.upsert(TableClusters, &row{Key: c.GetName(), Value: c})
}

// DeleteCluster removes a cluster and leaves a tombstone. The cluster's
// acks of other clusters' bundles go with it.
func (w *WriteTxn) DeleteCluster(name string) bool {
	if !w.delete(TableClusters, name) {
		return false
	}
	w.deleteBundleAcks("cluster", name)
	w.DeleteGatewayPolicies(name)
	return true
}

// PutExport stores one cluster's export of a service. Its create revision is
// kept across updates (MCS conflict resolution: the oldest export wins).
// A service whose namespace or name is invalid is refused with the error.
func (w *WriteTxn) PutExport(cluster federation.ClusterName, svc *fedv1.ExportedService) error {
	key, err := ServiceKeyOf(svc)
	if err != nil {
		return err
	}
	id := ExportID{Cluster: cluster, Service: key}
	rec := &fedv1.ExportRecord{Cluster: cluster.String(), Service: proto.Clone(svc).(*fedv1.ExportedService), CreateRevision: w.rev, ModifyRevision: w.rev}
	size := proto.Size(svc)
	if old := w.Export(id); old != nil {
		rec.CreateRevision = old.GetCreateRevision()
		size -= proto.Size(old.GetService())
	}
	w.upsert(TableExports, &row{Key: id.String(), Cluster: cluster.String(), Service: key.String(), Value: rec})
	w.addExportBytes(cluster, size)
	return nil
}

// DeleteExport removes one cluster's export of a service.
func (w *WriteTxn) DeleteExport(id ExportID) bool {
	old := w.Export(id)
	if old == nil || !w.delete(TableExports, id.String()) {
		return false
	}
	w.addExportBytes(id.Cluster, -proto.Size(old.GetService()))
	return true
}

func (w *WriteTxn) addExportBytes(cluster federation.ClusterName, d int) {
	key := metaExportBytes + cluster.String()
	switch n := int(w.metaUint(key)) + d; {
	case n > 0:
		w.insert(TableMeta, &row{Key: key, Value: uint64(n)})
	case w.get(TableMeta, key) != nil:
		w.remove(TableMeta, key)
	}
}

// PutBundle stores a trust domain's bundle.
func (w *WriteTxn) PutBundle(b *hubpb.BundleRecord) {
	b = proto.Clone(b).(*hubpb.BundleRecord)
	td := b.GetBundle().GetTrustDomain()
	if old := w.Bundle(td); old != nil {
		b.CreateRevision = old.GetCreateRevision()
	} else {
		b.CreateRevision = w.rev
	}
	b.ModifyRevision = w.rev
	w.upsert(TableBundles, &row{Key: td, Value: b})
}

// DeleteBundle removes a trust domain's bundle, and every member's ack of
// it.
func (w *WriteTxn) DeleteBundle(td string) bool {
	w.ResetBundleAcks(td)
	return w.delete(TableBundles, td)
}

// PutBundleAck records a member's ack of a bundle sequence. Not streamed,
// so bookkeeping: no tombstone, no revision, no wake-up.
func (w *WriteTxn) PutBundleAck(a *hubpb.BundleAck) {
	a = proto.Clone(a).(*hubpb.BundleAck)
	w.book(TableBundleAcks, &row{Key: bundleAckKey(a.GetCluster(), a.GetTrustDomain()), Rev: w.rev,
		Cluster: a.GetCluster(), TrustDomain: a.GetTrustDomain(), Value: a})
}

// ResetBundleAcks forgets every member's ack of trust domain td's bundle:
// its sequence numbers start again (a new CA at a join).
func (w *WriteTxn) ResetBundleAcks(td string) { w.deleteBundleAcks("trust_domain", td) }

func (w *WriteTxn) deleteBundleAcks(index, arg string) {
	for _, rw := range w.all(TableBundleAcks, index, arg) {
		if err := w.txn.Delete(TableBundleAcks, rw); err != nil {
			panic(err)
		}
		w.booked = true
	}
}

// book inserts a row of a table agents are not sent (connection leases,
// bundle acks): bookkeeping, like request records, so the revision — the
// last change a Sync stream can deliver — does not move and nobody wakes.
func (w *WriteTxn) book(table string, rw *row) {
	if err := w.txn.Insert(table, rw); err != nil {
		panic(err)
	}
	w.booked = true
}

// PutPolicy stores a traffic policy.
func (w *WriteTxn) PutPolicy(p *fedv1.TrafficPolicy) {
	p = proto.Clone(p).(*fedv1.TrafficPolicy)
	if old := w.Policy(p.GetName()); old != nil {
		p.CreateRevision = old.GetCreateRevision()
	} else {
		p.CreateRevision = w.rev
	}
	p.ModifyRevision = w.rev
	w.upsert(TablePolicies, &row{Key: p.GetName(), Service: p.GetService(), Value: p})
}

// PutFederation stores a relationship with an external trust domain.
func (w *WriteTxn) PutFederation(f *fedv1.FederationRelationship) {
	f = proto.Clone(f).(*fedv1.FederationRelationship)
	if old := w.Federation(f.GetTrustDomain()); old != nil {
		f.CreateRevision = old.GetCreateRevision()
	} else {
		f.CreateRevision = w.rev
	}
	f.ModifyRevision = w.rev
	w.insert(TableFederations, &row{Key: f.GetTrustDomain(), Rev: w.rev, Value: f})
}

// DeleteFederation removes a relationship.
func (w *WriteTxn) DeleteFederation(td string) bool { return w.remove(TableFederations, td) }

// PutConnection stores a hub server's lease on a cluster's connection.
func (w *WriteTxn) PutConnection(c *hubpb.ClusterConnection) {
	c = proto.Clone(c).(*hubpb.ClusterConnection)
	w.book(TableConnections, &row{Key: connKey(c.GetCluster(), c.GetServer()), Rev: w.rev, Cluster: c.GetCluster(), Server: c.GetServer(), Value: c})
}

// DeleteConnection removes a hub server's lease on a cluster's connection.
func (w *WriteTxn) DeleteConnection(cluster, server string) bool {
	rw := w.get(TableConnections, connKey(cluster, server))
	if rw == nil {
		return false
	}
	if err := w.txn.Delete(TableConnections, rw); err != nil {
		panic(err)
	}
	w.booked = true
	return true
}

// PutGatewayPolicies stores a cluster's gateway policy statuses. Not
// streamed, so bookkeeping: no tombstone, no revision, no wake-up.
func (w *WriteTxn) PutGatewayPolicies(c *hubpb.ClusterGatewayPolicies) {
	c = proto.Clone(c).(*hubpb.ClusterGatewayPolicies)
	w.book(TableGatewayPolicies, &row{Key: c.GetCluster(), Rev: w.rev, Cluster: c.GetCluster(), Value: c})
}

// DeleteGatewayPolicies forgets a cluster's gateway policy statuses.
func (w *WriteTxn) DeleteGatewayPolicies(cluster string) bool {
	rw := w.get(TableGatewayPolicies, cluster)
	if rw == nil {
		return false
	}
	if err := w.txn.Delete(TableGatewayPolicies, rw); err != nil {
		panic(err)
	}
	w.booked = true
	return true
}

// DeletePolicy removes a traffic policy.
func (w *WriteTxn) DeletePolicy(name string) bool { return w.delete(TablePolicies, name) }

// Commit records the revision if anything changed, prunes tombstones and wakes
// watchers.
func (w *WriteTxn) Commit() {
	if !w.dirty {
		if w.booked {
			w.txn.Commit() // bookkeeping only: no revision, nobody to wake
			w.store.requests.apply(w.request)
		} else {
			w.txn.Abort()
		}
		return
	}
	w.insert(TableMeta, &row{Key: metaRevision, Value: w.rev})
	w.pruneTombstones()
	w.txn.Commit()
	w.store.requests.apply(w.request)
	w.store.notify()
}

// Abort discards the transaction.
func (w *WriteTxn) Abort() { w.txn.Abort() }

func (w *WriteTxn) pruneTombstones() {
	n := int(w.metaUint(metaTombs))
	if n <= MaxTombstones {
		return
	}
	oldest := w.since(TableTombstones, 0)[:n-MaxTombstones]
	floor := w.TombstoneFloor()
	for _, rw := range oldest {
		if err := w.txn.Delete(TableTombstones, rw); err != nil {
			panic(err)
		}
		floor = max(floor, rw.Rev)
	}
	w.insert(TableMeta, &row{Key: metaFloor, Value: floor})
	w.addTombs(-len(oldest))
}

// restore helpers, used by the FSM when it rebuilds a store from a snapshot.

// Restorer loads records into a fresh store.
type Restorer struct {
	store       *Store
	txn         *memdb.Txn
	tombs       uint64
	exportBytes map[string]uint64
}

// NewRestorer starts loading a fresh store.
func NewRestorer() *Restorer {
	s := New()
	return &Restorer{store: s, txn: s.db.Txn(true), exportBytes: map[string]uint64{}}
}

func (r *Restorer) insert(table string, rw *row) {
	if err := r.txn.Insert(table, rw); err != nil {
		panic(err)
	}
}

// Header sets the revision and tombstone floor.
func (r *Restorer) Header(rev, floor uint64) {
	r.insert(TableMeta, &row{Key: metaRevision, Value: rev})
	r.insert(TableMeta, &row{Key: metaFloor, Value: floor})
}

// CA restores the hub CA.
func (r *Restorer) CA(ca *hubpb.CAState) { r.insert(TableMeta, &row{Key: metaCA, Value: ca}) }

// Token restores a join token.
func (r *Restorer) Token(t *hubpb.Token) { r.insert(TableTokens, &row{Key: t.GetId(), Value: t}) }

// Cluster restores a member cluster.
func (r *Restorer) Cluster(c *fedv1.ClusterRecord) {
	r.insert(TableClusters, &row{Key: c.GetName(), Rev: c.GetModifyRevision(), Value: c})
}

// Export restores an export.
func (r *Restorer) Export(e *fedv1.ExportRecord) error {
	id, err := ExportIDOf(e)
	if err != nil {
		return fmt.Errorf("state: restore export: %w", err)
	}
	r.insert(TableExports, &row{Key: id.String(), Rev: e.GetModifyRevision(), Cluster: id.Cluster.String(), Service: id.Service.String(), Value: e})
	r.exportBytes[e.GetCluster()] += uint64(proto.Size(e.GetService()))
	return nil
}

// Bundle restores a trust bundle.
func (r *Restorer) Bundle(b *hubpb.BundleRecord) {
	r.insert(TableBundles, &row{Key: b.GetBundle().GetTrustDomain(), Rev: b.GetModifyRevision(), Value: b})
}

// Policy restores a traffic policy.
func (r *Restorer) Policy(p *fedv1.TrafficPolicy) {
	r.insert(TablePolicies, &row{Key: p.GetName(), Rev: p.GetModifyRevision(), Service: p.GetService(), Value: p})
}

// Federation restores a relationship with an external trust domain.
func (r *Restorer) Federation(f *fedv1.FederationRelationship) {
	r.insert(TableFederations, &row{Key: f.GetTrustDomain(), Rev: f.GetModifyRevision(), Value: f})
}

// BundleAck restores a member's ack of a bundle sequence.
func (r *Restorer) BundleAck(a *hubpb.BundleAck) {
	r.insert(TableBundleAcks, &row{Key: bundleAckKey(a.GetCluster(), a.GetTrustDomain()),
		Cluster: a.GetCluster(), TrustDomain: a.GetTrustDomain(), Value: a})
}

// Connection restores a connection lease.
func (r *Restorer) Connection(c *hubpb.ClusterConnection) {
	r.insert(TableConnections, &row{Key: connKey(c.GetCluster(), c.GetServer()), Cluster: c.GetCluster(), Server: c.GetServer(), Value: c})
}

// GatewayPolicies restores a cluster's gateway policy statuses.
func (r *Restorer) GatewayPolicies(c *hubpb.ClusterGatewayPolicies) {
	r.insert(TableGatewayPolicies, &row{Key: c.GetCluster(), Cluster: c.GetCluster(), Value: c})
}

// Tombstone restores a tombstone.
func (r *Restorer) Tombstone(t *hubpb.Tombstone) error {
	if t.GetTable() == TableExports {
		if _, err := ParseExportID(t.GetKey()); err != nil {
			return fmt.Errorf("state: restore tombstone: %w", err)
		}
	}
	r.insert(TableTombstones, &row{Key: tombKey(t.GetTable(), t.GetKey()), Rev: t.GetRevision(), Value: t})
	r.tombs++
	return nil
}

// Request restores a recorded request.
func (r *Restorer) Request(rec *hubpb.RequestRecord) {
	r.insert(TableRequests, &row{Key: rec.GetRequestId(), Rev: rec.GetIndex(), Value: rec})
}

// Done commits and returns the restored store.
func (r *Restorer) Done() *Store {
	r.insert(TableMeta, &row{Key: metaTombs, Value: r.tombs})
	for cluster, n := range r.exportBytes {
		r.insert(TableMeta, &row{Key: metaExportBytes + cluster, Value: n})
	}
	r.store.requests.rebuild((&ReadTxn{txn: r.txn}).all(TableRequests, "id"))
	r.txn.Commit()
	return r.store
}
