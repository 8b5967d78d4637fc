package eastwest

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// copyBufSize is the size of the pooled copy buffers.
const copyBufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// duplex is one side of a pipe: a net.Conn or a QUIC stream.
type duplex interface {
	io.ReadWriter
	// CloseWrite ends the write direction cleanly (TCP FIN, QUIC FIN).
	CloseWrite() error
	// Abort ends both directions with an error the peer sees (TCP RST,
	// QUIC RESET_STREAM and STOP_SENDING), so a cut stream never looks
	// like a complete one. Safe concurrently with Read and Write.
	Abort()
	// Close releases the connection once both directions are done.
	Close() error
}

// abortCode is the QUIC stream error code of an aborted pipe.
const abortCode quic.StreamErrorCode = 1

// tcpDuplex adapts a net.Conn; CloseWrite half-closes a TCP connection
// and fully closes anything else.
type tcpDuplex struct{ net.Conn }

func (c tcpDuplex) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

func (c tcpDuplex) Abort() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close sends RST
	}
	_ = c.Close()
}

// streamConn is a QUIC stream as a net.Conn (for net/http's transport and
// for pipes). Close ends both directions; CloseWrite only ours.
type streamConn struct {
	*quic.Stream
	qc            *quic.Conn // the connection the stream is on
	local, remote net.Addr
	onClose       func()
	closed        atomic.Bool
	aborted       atomic.Bool
}

var _ net.Conn = (*streamConn)(nil)

func (s *streamConn) LocalAddr() net.Addr  { return s.local }
func (s *streamConn) RemoteAddr() net.Addr { return s.remote }
func (s *streamConn) CloseWrite() error    { return s.Stream.Close() }

func (s *streamConn) Abort() {
	s.aborted.Store(true)
	s.CancelRead(abortCode)
	s.CancelWrite(abortCode)
}

func (s *streamConn) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.CancelRead(0)
	var err error
	if !s.aborted.Load() {
		err = s.Stream.Close()
	}
	if s.onClose != nil {
		s.onClose()
	}
	return err
}

// pipe copies a→b and b→a until both directions have ended: a clean end
// of one side's reads half-closes the other side's writes; an error in
// either direction, ctx ending, or nothing moving either way for idle
// aborts both sides (so the peers see a reset, not a clean end). Each
// direction's goroutine only reads its source and writes its destination;
// both are closed after both goroutines return. Backpressure is the
// copies' own: a slow reader stops the writer. It returns the bytes copied
// each way.
func pipe(ctx context.Context, a, b duplex, idle time.Duration) (aToB, bToA int64) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	results := make(chan bool, 2) // per direction: ended cleanly
	cp := func(dst, src duplex, n *int64) {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf := *bp
		for {
			r, err := src.Read(buf)
			if r > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:r]); werr != nil {
					results <- false
					return
				}
				*n += int64(r)
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					results <- dst.CloseWrite() == nil
					return
				}
				results <- false
				return
			}
		}
	}
	go cp(b, a, &aToB)
	go cp(a, b, &bToA)
	abort := func() {
		a.Abort()
		b.Abort()
	}
	t := time.NewTimer(idle)
	defer t.Stop()
	aborted := false
	for done := 0; done < 2; {
		select {
		case ok := <-results:
			done++
			if !ok && !aborted {
				aborted = true
				abort()
			}
		case <-ctx.Done():
			if !aborted {
				aborted = true
				abort()
			}
		case <-t.C:
			since := time.Since(time.Unix(0, last.Load()))
			if since >= idle && !aborted {
				aborted = true
				abort()
				continue
			}
			t.Reset(max(idle-since, time.Millisecond))
		}
	}
	_ = a.Close()
	_ = b.Close()
	return aToB, bToA
}
