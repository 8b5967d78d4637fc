// Package state is the hub's in-memory state store: go-memdb tables over a
// declared schema, with a revision (the Raft index of the last change) on every
// record, tombstones for deletions, and a watch channel that closes on every
// commit. The FSM (package hub/fsm) is its only writer; gRPC handlers and Sync
// streams read immutable snapshots of it.
//
// Records are protobuf messages owned by the store: readers must not modify
// what they get back, and writers always insert fresh copies.
package state

import (
	"fmt"
	"strings"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Table names. They also appear in tombstones, which are persisted in
// snapshots, so they never change.
const (
	TableMeta       = "meta"
	TableTokens     = "tokens"
	TableClusters   = "clusters"
	TableExports    = "exports"
	TableBundles    = "bundles"
	TablePolicies   = "policies"
	TableTombstones = "tombstones"
	// TableFederations holds relationships with external trust domains. It
	// is not streamed to agents: they get the bundles, not how they were
	// fetched.
	TableFederations = "federations"
	// TableBundleAcks holds, per member and member trust domain, the
	// newest bundle sequence the member's agent acknowledged. It is not
	// streamed to agents (an ack must not fan out to every agent); the
	// agent of a rotating cluster asks for it (Sync.RotationStatus).
	TableBundleAcks = "bundle_acks"
	// TableConnections holds the hub servers' leases on member clusters'
	// Sync streams (hubpb.ClusterConnection), one row per cluster and
	// server. It is not streamed: a connect or disconnect is not a change
	// that agents receive.
	TableConnections = "connections"
	// TableRequests holds the outcome of each recent request the FSM
	// applied (hubpb.RequestRecord), keyed by request ID. It is
	// bookkeeping, not federation state: writing it does not move the
	// store revision nor wake watchers. The order in which its rows are
	// dropped is kept beside it in memory (requestLog), not indexed.
	TableRequests = "requests"
	// TableGatewayPolicies holds, per member cluster, its gateway
	// replicas' policy statuses (hubpb.ClusterGatewayPolicies) as its
	// agent forwarded them. Not streamed: bookkeeping for
	// `meshfed policy status`.
	TableGatewayPolicies = "gateway_policies"
)

func schema() *memdb.DBSchema {
	id := func(field string) *memdb.IndexSchema {
		return &memdb.IndexSchema{Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: field}}
	}
	rev := &memdb.IndexSchema{Name: "revision", Indexer: &memdb.UintFieldIndex{Field: "Rev"}}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		TableMeta:   {Name: TableMeta, Indexes: map[string]*memdb.IndexSchema{"id": id("Key")}},
		TableTokens: {Name: TableTokens, Indexes: map[string]*memdb.IndexSchema{"id": id("Key")}},
		TableClusters: {Name: TableClusters, Indexes: map[string]*memdb.IndexSchema{
			"id": id("Key"), "revision": rev,
		}},
		TableExports: {Name: TableExports, Indexes: map[string]*memdb.IndexSchema{
			"id":       id("Key"),
			"revision": rev,
			"cluster":  {Name: "cluster", Indexer: &memdb.StringFieldIndex{Field: "Cluster"}},
			"service":  {Name: "service", Indexer: &memdb.StringFieldIndex{Field: "Service"}},
		}},
		TableBundles: {Name: TableBundles, Indexes: map[string]*memdb.IndexSchema{
			"id": id("Key"), "revision": rev,
		}},
		TablePolicies: {Name: TablePolicies, Indexes: map[string]*memdb.IndexSchema{
			"id": id("Key"), "revision": rev,
			// AllowMissing: PutPolicy (type 7) never required a service.
			"service": {Name: "service", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Service"}},
		}},
		TableTombstones: {Name: TableTombstones, Indexes: map[string]*memdb.IndexSchema{
			"id": id("Key"), "revision": rev,
		}},
		TableFederations: {Name: TableFederations, Indexes: map[string]*memdb.IndexSchema{"id": id("Key")}},
		TableBundleAcks: {Name: TableBundleAcks, Indexes: map[string]*memdb.IndexSchema{
			"id":           id("Key"),
			"cluster":      {Name: "cluster", Indexer: &memdb.StringFieldIndex{Field: "Cluster"}},
			"trust_domain": {Name: "trust_domain", Indexer: &memdb.StringFieldIndex{Field: "TrustDomain"}},
		}},
		TableConnections: {Name: TableConnections, Indexes: map[string]*memdb.IndexSchema{
			"id":      id("Key"),
			"cluster": {Name: "cluster", Indexer: &memdb.StringFieldIndex{Field: "Cluster"}},
			"server":  {Name: "server", Indexer: &memdb.StringFieldIndex{Field: "Server"}},
		}},
		TableRequests:        {Name: TableRequests, Indexes: map[string]*memdb.IndexSchema{"id": id("Key")}},
		TableGatewayPolicies: {Name: TableGatewayPolicies, Indexes: map[string]*memdb.IndexSchema{"id": id("Key")}},
	}}
}

// row is what every table stores: a key, the revision of its last change, and
// the record.
type row struct {
	Key string
	Rev uint64
	// Cluster and Service are set for exports (secondary indexes);
	// Service for policies;
	// Cluster and TrustDomain for bundle acks; Cluster and Server for
	// connections.
	Cluster     string
	Service     string
	TrustDomain string
	Server      string
	Value       any
}

// ExportID names one cluster's export of one service: the primary key of
// the exports table, and how a removed export is reported (Delta). Its
// encoding, cluster + "/" + namespace + "/" + name, lives here alone.
type ExportID struct {
	Cluster federation.ClusterName
	Service federation.ServiceKey
}

// String returns the encoded key.
func (id ExportID) String() string { return id.Cluster.String() + "/" + id.Service.String() }

// ParseExportID decodes a key String produced.
func ParseExportID(k string) (ExportID, error) {
	cluster, svc, ok := strings.Cut(k, "/")
	if !ok {
		return ExportID{}, fmt.Errorf("state: export key %q: want cluster/namespace/name", k)
	}
	c, err := federation.ParseClusterName(cluster)
	if err != nil {
		return ExportID{}, fmt.Errorf("state: export key %q: %w", k, err)
	}
	key, err := federation.ParseServiceKey(svc)
	if err != nil {
		return ExportID{}, fmt.Errorf("state: export key %q: %w", k, err)
	}
	return ExportID{Cluster: c, Service: key}, nil
}

// ServiceKeyOf returns the key of an exported service, or an error naming
// what is invalid.
func ServiceKeyOf(svc *fedv1.ExportedService) (federation.ServiceKey, error) {
	return federation.NewServiceKey(svc.GetNamespace(), svc.GetName())
}

// ExportIDOf returns the ID of an export record.
func ExportIDOf(e *fedv1.ExportRecord) (ExportID, error) {
	c, err := federation.ParseClusterName(e.GetCluster())
	if err != nil {
		return ExportID{}, err
	}
	k, err := ServiceKeyOf(e.GetService())
	if err != nil {
		return ExportID{}, err
	}
	return ExportID{Cluster: c, Service: k}, nil
}

// bundleAckKey is the primary key of a bundle ack: the member that
// acknowledged, then the trust domain, split by a byte neither may hold.
func bundleAckKey(member, td string) string { return member + "\x00" + td }

func tombKey(table, key string) string { return table + ":" + key }

// connKey is the primary key of a connection lease. It is never parsed:
// readers use the row's Cluster and Server.
func connKey(cluster, server string) string { return cluster + "\x00" + server }

func mustDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("state: invalid schema: %v", err))
	}
	return db
}
