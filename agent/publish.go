package agent

import (
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// publisher decides what to send to the hub so that it holds this cluster's
// desired exports. It does no I/O and is owned by one goroutine.
//
// Rules: at most one update in flight per service key; a key changed while
// in flight is sent again after the result; messages hold at most maxBatch
// changes and maxBytes of encoded upserts; a batch refused as invalid is
// retried one key a message so that one bad export does not block others.
type publisher struct {
	maxBatch, maxBytes int

	haveDesired bool // the source delivered its first complete set
	desired     map[string]*fedv1.ExportedService
	published   map[string]*fedv1.ExportedService // as the hub has it
	ready       bool                              // a session is synced: published is known

	dirty    map[string]struct{}
	inflight map[string]uint64
	batches  map[uint64]sentBatch
	solo     map[string]struct{}
	failed   map[string]string // key → why the hub refused it
	nonce    uint64
}

type sentBatch struct {
	upserts map[string]*fedv1.ExportedService
	deletes []string
}

func newPublisher(maxBatch, maxBytes int) *publisher {
	return &publisher{
		maxBatch: maxBatch, maxBytes: maxBytes,
		desired: map[string]*fedv1.ExportedService{}, published: map[string]*fedv1.ExportedService{},
		dirty: map[string]struct{}{}, inflight: map[string]uint64{}, batches: map[uint64]sentBatch{},
		solo: map[string]struct{}{}, failed: map[string]string{},
	}
}

// setDesired takes the complete set of local exports (the caller gives up
// the map) and marks changed keys.
func (p *publisher) setDesired(m map[string]*fedv1.ExportedService) {
	for k, s := range m {
		if old, ok := p.desired[k]; !ok || !proto.Equal(old, s) {
			p.dirty[k] = struct{}{}
			delete(p.failed, k)
		}
	}
	for k := range p.desired {
		if _, ok := m[k]; !ok {
			p.dirty[k] = struct{}{}
			delete(p.failed, k)
		}
	}
	if !p.haveDesired {
		// The first set also decides which hub records to delete.
		for k := range p.published {
			p.dirty[k] = struct{}{}
		}
	}
	p.desired = m
	p.haveDesired = true
}

// sessionStarted starts a Sync session whose first delta has been applied:
// published is the hub's view of this cluster's exports. Results of
// earlier sessions are lost, so nothing is in flight.
func (p *publisher) sessionStarted(published map[string]*fedv1.ExportedService) {
	if published == nil {
		published = map[string]*fedv1.ExportedService{}
	}
	p.published = published
	p.ready = true
	clear(p.inflight)
	clear(p.batches)
	for k := range p.desired {
		p.dirty[k] = struct{}{}
	}
	for k := range published {
		p.dirty[k] = struct{}{}
	}
}

func (p *publisher) sessionEnded() { p.ready = false }

// next returns the next message to send, or nil. Keys whose desired state
// already matches the hub are dropped from dirty without a message.
func (p *publisher) next() *fedv1.PublishExports {
	if !p.ready || !p.haveDesired {
		return nil
	}
	keys := make([]string, 0, len(p.dirty))
	for k := range p.dirty {
		if _, busy := p.inflight[k]; !busy {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	msg := &fedv1.PublishExports{}
	b := sentBatch{upserts: map[string]*fedv1.ExportedService{}}
	size := 0
	n := 0
	for _, k := range keys {
		want, wanted := p.desired[k]
		have, has := p.published[k]
		switch {
		case wanted && has && proto.Equal(want, have), !wanted && !has:
			delete(p.dirty, k)
			continue
		}
		if _, ok := p.solo[k]; ok && n > 0 {
			continue // sent alone, in a later message
		}
		if wanted {
			sz := proto.Size(want)
			if sz > p.maxBytes {
				p.failed[k] = fmt.Sprintf("encoded export is %d bytes, at most %d", sz, p.maxBytes)
				delete(p.dirty, k)
				continue
			}
			if n > 0 && size+sz > p.maxBytes {
				break
			}
			size += sz
			msg.Upserts = append(msg.Upserts, want)
			b.upserts[k] = want
		} else {
			msg.Deletes = append(msg.Deletes, k)
			b.deletes = append(b.deletes, k)
		}
		n++
		if _, ok := p.solo[k]; ok || n >= p.maxBatch {
			break
		}
	}
	if n == 0 {
		return nil
	}
	p.nonce++
	msg.Nonce = p.nonce
	for k := range b.upserts {
		p.inflight[k] = p.nonce
		delete(p.dirty, k)
	}
	for _, k := range b.deletes {
		p.inflight[k] = p.nonce
		delete(p.dirty, k)
	}
	p.batches[p.nonce] = b
	return msg
}

// result handles a PublishResult. It reports whether the batch failed for
// a reason worth retrying (after a backoff).
func (p *publisher) result(r *fedv1.PublishResult) (retry bool) {
	b, ok := p.batches[r.GetNonce()]
	if !ok {
		return false // an earlier session's, or a bundle's
	}
	delete(p.batches, r.GetNonce())
	keys := make([]string, 0, len(b.upserts)+len(b.deletes))
	for k := range b.upserts {
		keys = append(keys, k)
	}
	keys = append(keys, b.deletes...)
	for _, k := range keys {
		if p.inflight[k] == r.GetNonce() {
			delete(p.inflight, k)
		}
	}
	if r.GetErrorCode() == "" {
		for k, s := range b.upserts {
			p.published[k] = s
			delete(p.solo, k)
		}
		for _, k := range b.deletes {
			delete(p.published, k)
			delete(p.solo, k)
		}
		return false
	}
	permanent := r.GetErrorCode() == codes.InvalidArgument.String() || r.GetErrorCode() == codes.PermissionDenied.String() ||
		r.GetErrorCode() == codes.ResourceExhausted.String() || r.GetErrorCode() == codes.FailedPrecondition.String()
	for _, k := range keys {
		switch {
		case permanent && len(keys) == 1:
			p.failed[k] = r.GetErrorCode() + ": " + r.GetError()
		case permanent:
			p.solo[k] = struct{}{}
			p.dirty[k] = struct{}{}
		default:
			p.dirty[k] = struct{}{}
		}
	}
	return !permanent || len(keys) > 1
}

// failures returns a copy of the refused keys and why.
func (p *publisher) failures() map[string]string {
	out := make(map[string]string, len(p.failed))
	for k, v := range p.failed {
		out[k] = v
	}
	return out
}

// inSync reports whether the hub holds exactly the desired exports.
func (p *publisher) inSync() bool {
	if !p.ready || !p.haveDesired || len(p.inflight) > 0 {
		return false
	}
	for k := range p.dirty {
		if _, failed := p.failed[k]; !failed {
			return false
		}
	}
	return true
}
