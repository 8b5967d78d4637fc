package wan

import (
	"context"
	"net"
	"sync"
	"time"
)

// tcpRelay accepts connections on ln and copies each, shaped, to a new
// connection from dial. Per connection and direction a reader stamps each
// chunk with its delivery time and a writer delivers the chunks in order at
// those times.
type tcpRelay struct {
	fwd, rev *direction
	ln       net.Listener
	dial     func(ctx context.Context) (net.Conn, error)
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

var _ relay = (*tcpRelay)(nil)

const (
	tcpChunk     = 16 << 10
	tcpReadAhead = 16
)

func (l *Link) startTCPRelay(ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) *tcpRelay {
	ctx, cancel := context.WithCancel(l.core.ctx)
	r := &tcpRelay{
		fwd: l.core.dirs[l.fwd], rev: l.core.dirs[l.rev],
		ln: ln, dial: dial, ctx: ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{},
	}
	r.wg.Add(1)
	go r.serve()
	return r
}

func (r *tcpRelay) Addr() net.Addr { return r.ln.Addr() }

func (r *tcpRelay) Close() error {
	r.cancel()
	err := r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

func (r *tcpRelay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		_ = c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *tcpRelay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		if c != nil {
			_ = c.Close()
			delete(r.conns, c)
		}
	}
}

func (r *tcpRelay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			return
		}
		r.wg.Add(1)
		go r.handle(c)
	}
}

func (r *tcpRelay) handle(client net.Conn) {
	defer r.wg.Done()
	var server net.Conn
	defer func() { r.untrack(client, server) }()
	r.fwd.connOpened()
	// Opening needs both directions (SYN, SYN-ACK): a partitioned link
	// holds the new connection until it heals.
	if r.fwd.waitUp(r.ctx) != nil || r.rev.waitUp(r.ctx) != nil {
		return
	}
	s, err := r.dial(r.ctx)
	if err != nil {
		return // the client sees its connection closed
	}
	if !r.track(s) {
		return
	}
	server = s
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	abort := func() { // ends both pumps and their reads
		cancel()
		_ = client.Close()
		_ = server.Close()
	}
	var pumps, readers sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); pump(ctx, abort, &readers, client, server, r.fwd) }()
	go func() { defer pumps.Done(); pump(ctx, abort, &readers, server, client, r.rev) }()
	pumps.Wait()
	abort()
	readers.Wait()
}

type chunk struct {
	data []byte
	at   time.Time
}

// pump copies src to dst through d until src ends (then half-closes dst) or
// something fails (then calls abort, which closes both connections and so
// ends the reader pump starts in readers).
func pump(ctx context.Context, abort func(), readers *sync.WaitGroup, src, dst net.Conn, d *direction) {
	chunks := make(chan chunk, tcpReadAhead)
	readers.Add(1)
	go func() {
		defer readers.Done()
		defer close(chunks)
		var prev time.Time
		for {
			buf := make([]byte, tcpChunk)
			n, err := src.Read(buf)
			if n > 0 {
				at := d.admitStream(time.Now(), n)
				if at.Before(prev) {
					at = prev // a stream is never reordered
				}
				prev = at
				select {
				case chunks <- chunk{data: buf[:n], at: at}:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(0)
	<-timer.C
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-chunks:
		case <-ctx.Done():
			return
		}
		if !ok {
			break
		}
		if wait := time.Until(c.at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return
			}
		}
		if d.waitUp(ctx) != nil {
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			abort()
			return
		}
		d.delivered(len(c.data), false)
	}
	if ctx.Err() != nil {
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	abort() // no half-close: end the whole connection
}
