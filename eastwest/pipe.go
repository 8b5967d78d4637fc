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
	// CloseWrite ends the write direction (TCP FIN, QUIC stream FIN).
	CloseWrite() error
	// Close ends both directions.
	Close() error
}

// tcpDuplex adapts a net.Conn; CloseWrite half-closes a TCP connection
// and fully closes anything else.
type tcpDuplex struct{ net.Conn }

func (c tcpDuplex) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// streamConn is a QUIC stream as a net.Conn (for net/http's transport and
// for pipes). Close ends both directions; CloseWrite only ours.
type streamConn struct {
	*quic.Stream
	qc            *quic.Conn // the connection the stream is on
	local, remote net.Addr
	onClose       func()
	closed        atomic.Bool
}

var _ net.Conn = (*streamConn)(nil)

func (s *streamConn) LocalAddr() net.Addr  { return s.local }
func (s *streamConn) RemoteAddr() net.Addr { return s.remote }
func (s *streamConn) CloseWrite() error    { return s.Stream.Close() }
func (s *streamConn) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.CancelRead(0)
	err := s.Stream.Close()
	if s.onClose != nil {
		s.onClose()
	}
	return err
}

// pipe copies a→b and b→a until both directions have ended, half-closing
// each side's write direction when the other side's read ends, and closes
// both when done, when ctx ends, or when nothing moved either way for idle.
// Backpressure is the copies' own: a slow reader stops the writer. It
// returns the bytes copied each way.
func pipe(ctx context.Context, a, b duplex, idle time.Duration) (aToB, bToA int64) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src duplex, n *int64) {
		defer wg.Done()
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf := *bp
		for {
			r, err := src.Read(buf)
			if r > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:r]); werr != nil {
					_ = src.Close()
					return
				}
				*n += int64(r)
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = dst.CloseWrite()
				} else {
					_ = dst.Close()
				}
				return
			}
		}
	}
	go cp(b, a, &aToB)
	go cp(a, b, &bToA)
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-done:
			_ = a.Close()
			_ = b.Close()
			return aToB, bToA
		case <-ctx.Done():
			_ = a.Close()
			_ = b.Close()
			<-done
			return aToB, bToA
		case <-t.C:
			since := time.Since(time.Unix(0, last.Load()))
			if since >= idle {
				_ = a.Close()
				_ = b.Close()
				<-done
				return aToB, bToA
			}
			t.Reset(idle - since)
		}
	}
}
