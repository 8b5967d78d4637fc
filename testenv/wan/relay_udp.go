package wan

import (
	"container/heap"
	"context"
	"net"
	"sync"
	"time"
)

// udpRelay forwards datagrams from clients of pc to target, each client
// through its own upstream socket, and the target's answers back. Datagrams
// are scheduled one by one (reordering is allowed) on a delay queue per
// direction.
type udpRelay struct {
	fwd, rev *direction
	pc       net.PacketConn
	target   net.Addr
	listen   func() (net.PacketConn, error)
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	fwdQ     *delayQueue
	revQ     *delayQueue

	mu       sync.Mutex
	sessions map[string]*udpSession
}

type udpSession struct {
	client net.Addr
	up     net.PacketConn
}

var _ relay = (*udpRelay)(nil)

const maxDatagram = 64 << 10

func (l *Link) startUDPRelay(pc net.PacketConn, target net.Addr, listen func() (net.PacketConn, error)) *udpRelay {
	ctx, cancel := context.WithCancel(l.core.ctx)
	r := &udpRelay{
		fwd: l.core.dirs[l.fwd], rev: l.core.dirs[l.rev],
		pc: pc, target: target, listen: listen, ctx: ctx, cancel: cancel,
		fwdQ: newDelayQueue(), revQ: newDelayQueue(),
		sessions: map[string]*udpSession{},
	}
	r.wg.Add(3)
	go func() { defer r.wg.Done(); r.fwdQ.run(ctx) }()
	go func() { defer r.wg.Done(); r.revQ.run(ctx) }()
	go r.serve()
	return r
}

func (r *udpRelay) Addr() net.Addr { return r.pc.LocalAddr() }

func (r *udpRelay) Close() error {
	r.cancel()
	err := r.pc.Close()
	r.mu.Lock()
	for _, s := range r.sessions {
		_ = s.up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

func (r *udpRelay) serve() {
	defer r.wg.Done()
	for {
		buf := make([]byte, maxDatagram)
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		s := r.session(from)
		if s == nil {
			continue
		}
		data := buf[:n]
		at, ok := r.fwd.admitDatagram(time.Now(), n)
		if !ok {
			continue
		}
		r.fwdQ.push(at, func() {
			if !r.fwd.deliverable() {
				return
			}
			if _, err := s.up.WriteTo(data, r.target); err == nil {
				r.fwd.delivered(n, true)
			}
		})
	}
}

// session returns the client's session, opening its upstream socket on the
// first datagram; nil if that fails or the relay is closing.
func (r *udpRelay) session(client net.Addr) *udpSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sessions[client.String()]; ok {
		return s
	}
	if r.ctx.Err() != nil {
		return nil
	}
	up, err := r.listen()
	if err != nil {
		return nil
	}
	s := &udpSession{client: client, up: up}
	r.sessions[client.String()] = s
	r.wg.Add(1)
	go r.answers(s)
	return s
}

// answers relays what the target sends to s's upstream socket back to s's
// client.
func (r *udpRelay) answers(s *udpSession) {
	defer r.wg.Done()
	for {
		buf := make([]byte, maxDatagram)
		n, from, err := s.up.ReadFrom(buf)
		if err != nil {
			return
		}
		if from.String() != r.target.String() {
			continue // only the target's answers
		}
		data := buf[:n]
		at, ok := r.rev.admitDatagram(time.Now(), n)
		if !ok {
			continue
		}
		r.revQ.push(at, func() {
			if !r.rev.deliverable() {
				return
			}
			if _, err := r.pc.WriteTo(data, s.client); err == nil {
				r.rev.delivered(n, true)
			}
		})
	}
}

// delayQueue runs functions at their times, in time order; functions due at
// the same time run in the order they were pushed.
type delayQueue struct {
	mu    sync.Mutex
	items delayHeap
	seq   uint64
	wake  chan struct{}
}

type delayItem struct {
	at  time.Time
	seq uint64
	fn  func()
}

type delayHeap []delayItem

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h delayHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(delayItem)) }
func (h *delayHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newDelayQueue() *delayQueue { return &delayQueue{wake: make(chan struct{}, 1)} }

func (q *delayQueue) push(at time.Time, fn func()) {
	q.mu.Lock()
	q.seq++
	heap.Push(&q.items, delayItem{at: at, seq: q.seq, fn: fn})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *delayQueue) run(ctx context.Context) {
	timer := time.NewTimer(0)
	<-timer.C
	for {
		q.mu.Lock()
		var due []func()
		now := time.Now()
		for q.items.Len() > 0 && !q.items[0].at.After(now) {
			due = append(due, heap.Pop(&q.items).(delayItem).fn)
		}
		wait, pending := time.Duration(0), q.items.Len() > 0
		if pending {
			wait = q.items[0].at.Sub(now)
		}
		q.mu.Unlock()
		for _, fn := range due {
			fn()
		}
		if len(due) > 0 {
			continue // time has passed while they ran
		}
		if pending {
			timer.Reset(wait)
		}
		select {
		case <-q.wake:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}
