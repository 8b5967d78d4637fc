package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"strings"
	"sync"

	"github.com/meshfed/meshfed/trust"
)

// egressTable assigns each port of each import a local egress port of the
// gateway, one port each from [min, max], and keeps the assignment for as
// long as the import exists (and across restarts: the kubernetes importer
// records it on the ServiceImport, the file source in the data directory).
// Keys are "namespace/name/port-name". It is safe for concurrent use.
type egressTable struct {
	min, max int
	onChange func()

	mu    sync.Mutex
	ports map[string]int
}

func newEgressTable(minPort, maxPort int, onChange func()) *egressTable {
	if onChange == nil {
		onChange = func() {}
	}
	return &egressTable{min: minPort, max: maxPort, onChange: onChange, ports: map[string]int{}}
}

// seed records assignments made before a restart; ports outside the range
// and ports already taken are ignored.
func (t *egressTable) seed(m map[string]int) {
	t.mu.Lock()
	used := t.usedLocked()
	for k, p := range m {
		if _, ok := t.ports[k]; ok || p < t.min || p > t.max || used[p] {
			continue
		}
		t.ports[k] = p
		used[p] = true
	}
	t.mu.Unlock()
	t.onChange()
}

func (t *egressTable) usedLocked() map[int]bool {
	used := make(map[int]bool, len(t.ports))
	for _, p := range t.ports {
		used[p] = true
	}
	return used
}

// allocate returns the egress port of one port of an import, assigning the
// lowest free one the first time.
func (t *egressTable) allocate(key, port string) (int, error) {
	k := key + "/" + port
	t.mu.Lock()
	if p, ok := t.ports[k]; ok {
		t.mu.Unlock()
		return p, nil
	}
	used := t.usedLocked()
	for p := t.min; p <= t.max; p++ {
		if !used[p] {
			t.ports[k] = p
			t.mu.Unlock()
			t.onChange()
			return p, nil
		}
	}
	t.mu.Unlock()
	return 0, fmt.Errorf("egress ports %d-%d exhausted", t.min, t.max)
}

// retain forgets the assignments of imports (namespace/name) not in want.
func (t *egressTable) retain(want map[string]bool) {
	t.mu.Lock()
	changed := false
	for k := range t.ports {
		if i := strings.LastIndex(k, "/"); !want[k[:i]] {
			delete(t.ports, k)
			changed = true
		}
	}
	t.mu.Unlock()
	if changed {
		t.onChange()
	}
}

// snapshot returns a copy of the assignments.
func (t *egressTable) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.ports)
}

// egressFile persists an egressTable for the file source.
type egressFile struct{ store trust.Store }

func newEgressFile(path string) egressFile { return egressFile{store: trust.NewFileStore(path)} }

func (f egressFile) load() (map[string]int, error) {
	b, err := f.store.Load()
	if errors.Is(err, trust.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m map[string]int
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("egress ports file: %w", err)
	}
	return m, nil
}

func (f egressFile) save(m map[string]int) error {
	b, err := json.Marshal(m)
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
	want := make(map[string]bool, len(plans))
	var errs []error
	for _, key := range sortedKeys(plans) {
		want[key] = true
		for _, port := range plans[key].Ports {
			if _, err := t.allocate(key, port.GetName()); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
		}
	}
	t.retain(want)
	return !maps.Equal(before, t.snapshot()), errors.Join(errs...)
}
