package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/delta"
)

// exportKey names one cluster's export of one service.
type exportKey struct {
	cluster string
	service string // namespace/name
}

// view is the agent's copy of the hub's streamed state at one revision.
// It is owned by one goroutine; records are never modified after they are
// inserted (the hub's records and the decoded cache are fresh messages), so
// a snapshot may share them.
type view struct {
	revision uint64
	clusters map[string]*fedv1.ClusterRecord
	exports  map[exportKey]*fedv1.ExportRecord
	bundles  map[string]*fedv1.TrustBundle
	policies map[string]*fedv1.TrafficPolicy
}

func newView() *view {
	return &view{
		clusters: map[string]*fedv1.ClusterRecord{},
		exports:  map[exportKey]*fedv1.ExportRecord{},
		bundles:  map[string]*fedv1.TrustBundle{},
		policies: map[string]*fedv1.TrafficPolicy{},
	}
}

func exportKeyOf(e *fedv1.ExportRecord) exportKey {
	return exportKey{cluster: e.GetCluster(), service: e.GetService().GetNamespace() + "/" + e.GetService().GetName()}
}

// apply applies one complete delta. A reset replaces everything.
func (v *view) apply(d *fedv1.SyncDelta) {
	if d.GetReset_() {
		*v = *newView()
	}
	// The keyed-delta rule, shared with the gateways' state (gateway/delta).
	delta.Apply(v.clusters, d.GetClusters(), (*fedv1.ClusterRecord).GetName, d.GetRemovedClusters())
	removed := make([]exportKey, 0, len(d.GetRemovedExports()))
	for _, r := range d.GetRemovedExports() {
		removed = append(removed, exportKey{cluster: r.GetCluster(), service: r.GetService()})
	}
	delta.Apply(v.exports, d.GetExports(), exportKeyOf, removed)
	delta.Apply(v.bundles, d.GetBundles(), (*fedv1.TrustBundle).GetTrustDomain, d.GetRemovedBundles())
	delta.Apply(v.policies, d.GetPolicies(), (*fedv1.TrafficPolicy).GetName, d.GetRemovedPolicies())
	if d.GetRevision() != 0 {
		v.revision = d.GetRevision()
	}
}

// snapshot returns an immutable copy (maps copied, records shared).
func (v *view) snapshot() *view {
	c := &view{
		revision: v.revision,
		clusters: make(map[string]*fedv1.ClusterRecord, len(v.clusters)),
		exports:  make(map[exportKey]*fedv1.ExportRecord, len(v.exports)),
		bundles:  make(map[string]*fedv1.TrustBundle, len(v.bundles)),
		policies: make(map[string]*fedv1.TrafficPolicy, len(v.policies)),
	}
	for k, x := range v.clusters {
		c.clusters[k] = x
	}
	for k, x := range v.exports {
		c.exports[k] = x
	}
	for k, x := range v.bundles {
		c.bundles[k] = x
	}
	for k, x := range v.policies {
		c.policies[k] = x
	}
	return c
}

// own returns this cluster's exports as the hub has them, by namespace/name.
func (v *view) own(cluster string) map[string]*fedv1.ExportedService {
	out := map[string]*fedv1.ExportedService{}
	for k, e := range v.exports {
		if k.cluster == cluster {
			out[k.service] = e.GetService()
		}
	}
	return out
}

// asDelta is the whole view as one reset delta, sorted for determinism.
func (v *view) asDelta() *fedv1.SyncDelta {
	d := &fedv1.SyncDelta{Revision: v.revision, Reset_: true}
	d.Clusters = delta.Values(v.clusters)
	eks := make([]exportKey, 0, len(v.exports))
	for k := range v.exports {
		eks = append(eks, k)
	}
	slices.SortFunc(eks, func(a, b exportKey) int {
		if a.cluster != b.cluster {
			return cmpString(a.cluster, b.cluster)
		}
		return cmpString(a.service, b.service)
	})
	for _, k := range eks {
		d.Exports = append(d.Exports, v.exports[k])
	}
	d.Bundles = delta.Values(v.bundles)
	d.Policies = delta.Values(v.policies)
	return d
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// deltaAssembler joins the messages of one split delta: only the last
// carries the revision, and the view only ever moves by whole deltas (so a
// reset split over several messages never leaves the view half-empty).
type deltaAssembler struct {
	parts []*fedv1.SyncDelta
	n     int // records buffered
}

// maxBufferedRecords bounds a delta being assembled (the hub sends at most
// 512 records a message; a full reset of a maximal federation is far below).
const maxBufferedRecords = 4 << 20

var errDeltaTooLarge = errors.New("agent: sync: delta exceeds the buffered record limit")

func deltaRecords(d *fedv1.SyncDelta) int {
	return len(d.GetClusters()) + len(d.GetRemovedClusters()) + len(d.GetExports()) + len(d.GetRemovedExports()) +
		len(d.GetBundles()) + len(d.GetRemovedBundles()) + len(d.GetPolicies()) + len(d.GetRemovedPolicies())
}

// add buffers d; it returns the complete delta when d carries the revision.
func (a *deltaAssembler) add(d *fedv1.SyncDelta) (*fedv1.SyncDelta, error) {
	a.n += deltaRecords(d)
	if a.n > maxBufferedRecords {
		a.parts, a.n = nil, 0
		return nil, errDeltaTooLarge
	}
	a.parts = append(a.parts, d)
	if d.GetRevision() == 0 {
		return nil, nil
	}
	parts := a.parts
	a.parts, a.n = nil, 0
	if len(parts) == 1 {
		return parts[0], nil
	}
	out := &fedv1.SyncDelta{Revision: d.GetRevision(), Reset_: parts[0].GetReset_()}
	for _, p := range parts {
		out.Clusters = append(out.Clusters, p.GetClusters()...)
		out.RemovedClusters = append(out.RemovedClusters, p.GetRemovedClusters()...)
		out.Exports = append(out.Exports, p.GetExports()...)
		out.RemovedExports = append(out.RemovedExports, p.GetRemovedExports()...)
		out.Bundles = append(out.Bundles, p.GetBundles()...)
		out.RemovedBundles = append(out.RemovedBundles, p.GetRemovedBundles()...)
		out.Policies = append(out.Policies, p.GetPolicies()...)
		out.RemovedPolicies = append(out.RemovedPolicies, p.GetRemovedPolicies()...)
	}
	return out, nil
}

// The persisted hub state: a magic, a format version byte, then the view
// as one reset SyncDelta in protobuf.
var hubStateMagic = []byte("MFHS")

const hubStateVersion byte = 1

func encodeView(v *view) ([]byte, error) {
	b, err := proto.Marshal(v.asDelta())
	if err != nil {
		return nil, fmt.Errorf("agent: hub state: %w", err)
	}
	return append(append(append([]byte(nil), hubStateMagic...), hubStateVersion), b...), nil
}

func decodeView(b []byte) (*view, error) {
	if len(b) < len(hubStateMagic)+1 || !bytes.Equal(b[:len(hubStateMagic)], hubStateMagic) {
		return nil, errors.New("agent: hub state: not a meshfed hub state file")
	}
	if ver := b[len(hubStateMagic)]; ver != hubStateVersion {
		return nil, fmt.Errorf("agent: hub state: format version %d, this agent reads %d", ver, hubStateVersion)
	}
	var d fedv1.SyncDelta
	if err := proto.Unmarshal(b[len(hubStateMagic)+1:], &d); err != nil {
		return nil, fmt.Errorf("agent: hub state: %w", err)
	}
	if d.GetRevision() == 0 {
		return nil, errors.New("agent: hub state: revision 0")
	}
	v := newView()
	v.apply(&d)
	return v, nil
}

// viewFile persists the view in the data directory, atomically.
type viewFile struct{ path string }

// load returns nil, nil when there is no cache.
func (f viewFile) load() (*view, error) {
	fi, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: hub state: %w", err)
	}
	if fi.Size() > MaxHubStateBytes {
		return nil, fmt.Errorf("agent: hub state: %s is %d bytes, at most %d", f.path, fi.Size(), MaxHubStateBytes)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("agent: hub state: %w", err)
	}
	return decodeView(b)
}

func (f viewFile) save(v *view) error {
	b, err := encodeView(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, b)
}

// writeFileAtomic writes data to a temporary file in the same directory
// (0600), fsyncs it and renames it over path.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	name := tmp.Name()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(name)
		return fmt.Errorf("agent: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		_ = os.Remove(name)
		return fmt.Errorf("agent: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("agent: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// remove deletes the cache; there being none is not an error.
func (f viewFile) remove() error {
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agent: hub state: %w", err)
	}
	return nil
}
