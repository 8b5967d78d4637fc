package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

// egressKey names one port of one import: the unit an egress port is
// assigned to. Its text form, "namespace/name/port-name", is the one
// persisted encoding (egressKey.String and parseEgressKey).
type egressKey struct {
	service federation.ServiceKey
	port    string
}

func (k egressKey) String() string { return k.service.String() + "/" + k.port }

// parseEgressKey parses the text form of an egressKey.
func parseEgressKey(s string) (egressKey, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return egressKey{}, fmt.Errorf("egress key %q: want namespace/name/port", s)
	}
	svc, err := federation.ParseServiceKey(s[:i])
	if err != nil {
		return egressKey{}, fmt.Errorf("egress key %q: %w", s, err)
	}
	return egressKey{service: svc, port: s[i+1:]}, nil
}

// DefaultEgressPortHold is how long a freed egress port is held back
// before it is assigned to another import, so that a client still
// connected to it (or a gateway replica a config behind) never reaches a
// different service on the same port.
const DefaultEgressPortHold = 5 * time.Minute

// egressTable assigns each port of each import a local egress port of the
// gateway, one port each from [min, max], and keeps the assignment for as
// long as the import exists (and across restarts: the kubernetes importer
// records it on the ServiceImport, the file source in the data directory;
// either is seeded back before the gateways are served). A port freed by
// an import that went away is held back for hold before reuse. It is safe
// for concurrent use.
type egressTable struct {
	min, max int
	hold     time.Duration
	now      func() time.Time
	onChange func()

	mu    sync.Mutex
	ports map[egressKey]int
	held  map[int]time.Time // freed port → when it may be reused
}

func newEgressTable(minPort, maxPort int, onChange func()) *egressTable {
	if onChange == nil {
		onChange = func() {}
	}
	return &egressTable{min: minPort, max: maxPort, hold: DefaultEgressPortHold, now: time.Now, onChange: onChange,
		ports: map[egressKey]int{}, held: map[int]time.Time{}}
}

// seed records assignments made before a restart; ports outside the range
// and ports already taken are ignored.
func (t *egressTable) seed(m map[egressKey]int) {
	t.mu.Lock()
	used := t.usedLocked()
	for k, p := range m {
		if _, ok := t.ports[k]; ok || p < t.min || p > t.max || used[p] {
			continue
		}
		t.ports[k] = p
		used[p] = true
		delete(t.held, p)
	}
	t.mu.Unlock()
	t.onChange()
}

// mirror makes the table hold exactly m (within the range): a standby
// follows the ports the leader recorded.
func (t *egressTable) mirror(m map[egressKey]int) {
	t.mu.Lock()
	next := make(map[egressKey]int, len(m))
	for k, p := range m {
		if p >= t.min && p <= t.max {
			next[k] = p
		}
	}
	changed := !maps.Equal(next, t.ports)
	t.ports = next
	t.mu.Unlock()
	if changed {
		t.onChange()
	}
}

func (t *egressTable) usedLocked() map[int]bool {
	used := make(map[int]bool, len(t.ports))
	for _, p := range t.ports {
		used[p] = true
	}
	return used
}

// allocate returns the egress port of one port of an import, assigning the
// lowest free one that is not held back the first time.
func (t *egressTable) allocate(svc federation.ServiceKey, port string) (int, error) {
	k := egressKey{service: svc, port: port}
	t.mu.Lock()
	if p, ok := t.ports[k]; ok {
		t.mu.Unlock()
		return p, nil
	}
	now := t.now()
	for p, until := range t.held {
		if !now.Before(until) {
			delete(t.held, p)
		}
	}
	used := t.usedLocked()
	for p := t.min; p <= t.max; p++ {
		if _, held := t.held[p]; !used[p] && !held {
			t.ports[k] = p
			t.mu.Unlock()
			t.onChange()
			return p, nil
		}
	}
	n := len(t.held)
	t.mu.Unlock()
	return 0, fmt.Errorf("egress ports %d-%d exhausted (%d freed ones held back for %v)", t.min, t.max, n, t.hold)
}

// retain forgets the assignments of imports not in want, holding their
// ports back.
func (t *egressTable) retain(want map[federation.ServiceKey]bool) {
	t.mu.Lock()
	changed := false
	until := t.now().Add(t.hold)
	for k, p := range t.ports {
		if !want[k.service] {
			delete(t.ports, k)
			t.held[p] = until
			changed = true
		}
	}
	t.mu.Unlock()
	if changed {
		t.onChange()
	}
}

// snapshot returns a copy of the assignments.
func (t *egressTable) snapshot() map[egressKey]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.ports)
}

// encodeEgress and decodeEgress are the persisted form of a table: a JSON
// object from egressKey's text form to the port.
func encodeEgress(m map[egressKey]int) ([]byte, error) {
	out := make(map[string]int, len(m))
	for k, p := range m {
		out[k.String()] = p
	}
	return json.Marshal(out)
}

func decodeEgress(b []byte) (map[egressKey]int, error) {
	var in map[string]int
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	out := make(map[egressKey]int, len(in))
	var errs []error
	for s, p := range in {
		k, err := parseEgressKey(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[k] = p
	}
	return out, errors.Join(errs...)
}

// egressFile persists an egressTable for the file source.
type egressFile struct{ store trust.Store }

func newEgressFile(path string) egressFile { return egressFile{store: trust.NewFileStore(path)} }

func (f egressFile) load() (map[egressKey]int, error) {
	b, err := f.store.Load()
	if errors.Is(err, trust.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := decodeEgress(b)
	if err != nil {
		return m, fmt.Errorf("egress ports file: %w", err)
	}
	return m, nil
}

func (f egressFile) save(m map[egressKey]int) error {
	b, err := encodeEgress(m)
	if err != nil {
		return err
	}
	return f.store.Save(b)
}

// allocateFilePlans assigns egress ports to every import of plans (the
// file source has no importer to do it) and forgets removed imports. It
// reports whether the table changed.
func allocateFilePlans(t *egressTable, plans map[string]*importPlan) (bool, error) {
	before := t.snapshot()
	want := make(map[federation.ServiceKey]bool, len(plans))
	var errs []error
	for _, key := range sortedKeys(plans) {
		svc, err := federation.ParseServiceKey(key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[svc] = true
		for _, port := range plans[key].Ports {
			if _, err := t.allocate(svc, port.GetName()); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
		}
	}
	t.retain(want)
	return !maps.Equal(before, t.snapshot()), errors.Join(errs...)
}
