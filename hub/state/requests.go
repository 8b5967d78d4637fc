package state

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// The requests table (TableRequests) is indexed by request ID only. The
// order in which its records are dropped — by the Raft index that recorded
// them, oldest first — and their count live beside it in memory, in the
// store's requestLog: a queue in Raft index order, which appending keeps
// sorted because every record is newer than the last. The queue is derived
// state, like the export byte counts: a restore rebuilds it from the
// records (Restorer.Done), so every server holds the same order. Keeping it
// out of memdb saves a revision index and a count row, three tree writes
// per recorded request.

// requestLog is the store's queue of recorded requests. The FSM's
// WriteTxn reads it and stages a change (requestChange) that Commit
// applies; mu guards it against readers of RequestCount and RequestOrder.
type requestLog struct {
	mu sync.Mutex
	// q[head:] are the entries, oldest first. An entry whose ID has been
	// recorded again since is stale: its index is in stale, and it is
	// skipped, and forgotten, when it reaches the head.
	q     []requestEntry
	head  int
	live  int
	stale map[uint64]struct{}
}

type requestEntry struct {
	index uint64 // the Raft index that recorded it (RequestRecord.index)
	atMs  int64  // RequestRecord.applied_at_ms
	id    string
}

// requestChange is what one RecordRequest does to the log: append added,
// mark the entry at index replaced stale (if hasReplaced), consume the
// entries up to head (the appended one is position len(q)), leaving live.
type requestChange struct {
	added       requestEntry
	replaced    uint64
	hasReplaced bool
	head        int
	live        int
}

// RecordRequest records a request's outcome under its ID, replacing an
// older record with that ID, and then drops records oldest (lowest index)
// first: every one applied before expireBeforeMs, stopping at the first
// that is not, and then as many more as it takes to keep at most keep. It
// returns how many it dropped. rec.Index must be above every recorded
// index; one call per transaction.
func (w *WriteTxn) RecordRequest(rec *hubpb.RequestRecord, expireBeforeMs int64, keep int) int {
	if w.request != nil {
		panic("state: RecordRequest called twice in one transaction")
	}
	l := &w.store.requests
	l.mu.Lock()
	defer l.mu.Unlock()
	id := rec.GetRequestId()
	c := &requestChange{added: requestEntry{index: rec.GetIndex(), atMs: rec.GetAppliedAtMs(), id: id}, live: l.live + 1}
	if n := len(l.q); n > l.head && l.q[n-1].index >= c.added.index {
		panic(fmt.Sprintf("state: request recorded at index %d after one at %d", c.added.index, l.q[n-1].index))
	}
	if old := w.get(TableRequests, id); old != nil {
		c.replaced, c.hasReplaced = old.Rev, true
		c.live--
	}
	if err := w.txn.Insert(TableRequests, &row{Key: id, Rev: rec.GetIndex(), Value: rec}); err != nil {
		panic(err)
	}
	dropped := 0
	i := l.head
	for ; c.live > 0 && i <= len(l.q); i++ {
		e := c.added
		if i < len(l.q) {
			e = l.q[i]
		}
		if _, ok := l.stale[e.index]; ok || (c.hasReplaced && e.index == c.replaced) {
			continue
		}
		if c.live <= keep && e.atMs >= expireBeforeMs {
			break
		}
		if err := w.txn.Delete(TableRequests, &row{Key: e.id}); err != nil {
			panic(err)
		}
		c.live--
		dropped++
	}
	c.head = i
	w.request = c
	w.booked = true
	return dropped
}

// apply makes a committed transaction's change (nil: none).
func (l *requestLog) apply(c *requestChange) {
	if c == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.q = append(l.q, c.added)
	if c.hasReplaced {
		if l.stale == nil {
			l.stale = map[uint64]struct{}{}
		}
		l.stale[c.replaced] = struct{}{}
	}
	if len(l.stale) > 0 {
		for _, e := range l.q[l.head:c.head] {
			delete(l.stale, e.index)
		}
	}
	clear(l.q[l.head:c.head]) // drop the IDs for the collector
	l.head, l.live = c.head, c.live
	if l.head > 1024 && l.head > len(l.q)/2 {
		l.q = append(l.q[:0], l.q[l.head:]...)
		l.head = 0
	}
}

// rebuild orders restored records by index (ties, which a consistent
// snapshot does not have, by ID).
func (l *requestLog) rebuild(rows []*row) {
	q := make([]requestEntry, 0, len(rows))
	for _, rw := range rows {
		rec := rw.Value.(*hubpb.RequestRecord)
		q = append(q, requestEntry{index: rec.GetIndex(), atMs: rec.GetAppliedAtMs(), id: rec.GetRequestId()})
	}
	slices.SortFunc(q, func(a, b requestEntry) int {
		return cmp.Or(cmp.Compare(a.index, b.index), cmp.Compare(a.id, b.id))
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.q, l.head, l.live, l.stale = q, 0, len(q), nil
}

// RequestCount is the number of recorded requests.
func (s *Store) RequestCount() int {
	s.requests.mu.Lock()
	defer s.requests.mu.Unlock()
	return s.requests.live
}

// RequestOrder returns the IDs of the recorded requests in the order they
// are dropped, oldest first.
func (s *Store) RequestOrder() []string {
	l := &s.requests
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, l.live)
	for _, e := range l.q[l.head:] {
		if _, ok := l.stale[e.index]; !ok {
			out = append(out, e.id)
		}
	}
	return out
}
