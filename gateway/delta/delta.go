// Package delta applies keyed deltas: the upserts and removals by key that
// both the hub's Sync stream (to the agent's view) and the agent's gateway
// config stream (to a gateway's state) carry. One rule, in one place: a
// delta's upserts replace the entries with the same key, then its removals
// delete by key; a removal of a key that is absent is not an error.
package delta

import (
	"cmp"
	"slices"
)

// Apply upserts every value of ups into m under key(v), then deletes the
// keys in removed. It keeps the values themselves (no copies): callers
// share immutable records.
func Apply[K comparable, V any](m map[K]V, ups []V, key func(V) K, removed []K) {
	for _, v := range ups {
		m[key(v)] = v
	}
	for _, k := range removed {
		delete(m, k)
	}
}

// Clone returns a shallow copy of m (the values are shared), never nil.
func Clone[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Values returns m's values ordered by key: the deterministic order in
// which a whole state is written out (a snapshot, a cache).
func Values[K cmp.Ordered, V any](m map[K]V) []V {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}
