package testenv

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Instance names who serves a sample workload: the cluster, the zone and the
// instance (for example a pod name).
type Instance struct {
	Cluster string
	Zone    string
	Name    string
}

// EchoReply is what an echo server says about itself: the JSON body of every
// HTTP echo answer (also of its 503s), and the first line a TCP echo server
// writes on a new connection before it echoes.
type EchoReply struct {
	Cluster  string `json:"cluster"`
	Zone     string `json:"zone"`
	Instance string `json:"instance"`
	Method   string `json:"method,omitempty"`
	Path     string `json:"path,omitempty"`
	Healthy  bool   `json:"healthy"`
}

// Echo is a sample workload served in-process on loopback: an HTTP echo
// server ([StartHTTPEcho]) or a TCP echo server ([StartTCPEcho]). On command
// it turns unhealthy, slow or dead, and comes back:
//
//   - [Echo.SetHealthy](false): HTTP answers 503 on /healthz and on every
//     request; TCP accepts and at once resets the connection.
//   - [Echo.SetDelay](d): every answer (HTTP response, TCP greeting and echo)
//     waits d first.
//   - [Echo.SetFailEvery](n): every n-th HTTP request is answered 503
//     "injected abort" (n 2: half of them), as a flaky backend would.
//   - [Echo.Kill]: the listener and every open connection are closed;
//     connecting is refused. [Echo.Revive] listens again on the same address.
//
// The methods are safe for concurrent use.
type Echo struct {
	inst  Instance
	http  bool
	addr  string
	delay atomic.Int64 // time.Duration
	sick  atomic.Bool
	count atomic.Int64
	// failEvery and seen: every failEvery-th request fails (0: none).
	failEvery atomic.Int64
	seen      atomic.Int64

	mu    sync.Mutex
	ln    net.Listener
	srv   *http.Server          // HTTP, while alive
	conns map[net.Conn]struct{} // TCP, while alive
	stop  chan struct{}         // TCP: closed by Kill, ends waits
	wg    sync.WaitGroup        // TCP connection handlers
}

// StartHTTPEcho starts an HTTP echo server on a free loopback port. Every
// request except GET /healthz is answered with an [EchoReply] (JSON); GET
// /healthz answers "ok" or 503.
func StartHTTPEcho(inst Instance) (*Echo, error) {
	return startEcho(inst, true, "127.0.0.1:0")
}

// StartTCPEcho starts a TCP echo server on a free loopback port. On each
// connection it writes one line, an [EchoReply] in JSON, then echoes every
// byte it reads.
func StartTCPEcho(inst Instance) (*Echo, error) {
	return startEcho(inst, false, "127.0.0.1:0")
}

func startEcho(inst Instance, isHTTP bool, addr string) (*Echo, error) {
	e := &Echo{inst: inst, http: isHTTP}
	if err := e.listen(addr); err != nil {
		return nil, err
	}
	e.addr = e.ln.Addr().String()
	return e, nil
}

// Addr is the server's address, the same across Kill and Revive.
func (e *Echo) Addr() string { return e.addr }

// URL is "http://" + Addr for an HTTP echo server.
func (e *Echo) URL() string { return "http://" + e.addr }

// Instance is who the server says it is.
func (e *Echo) Instance() Instance { return e.inst }

// SetHealthy makes the server healthy (the default) or unhealthy.
func (e *Echo) SetHealthy(ok bool) { e.sick.Store(!ok) }

// SetDelay makes every answer wait d first; 0 makes it fast again.
func (e *Echo) SetDelay(d time.Duration) { e.delay.Store(int64(d)) }

// SetFailEvery makes every n-th HTTP request (counted from now) answer
// 503 "injected abort"; 0 turns it off.
func (e *Echo) SetFailEvery(n int) {
	e.seen.Store(0)
	e.failEvery.Store(int64(n))
}

// Served is how many requests (HTTP) or connections (TCP) were answered
// while healthy.
func (e *Echo) Served() int64 { return e.count.Load() }

// Kill closes the listener and every open connection. Connecting is refused
// until Revive.
func (e *Echo) Kill() {
	e.mu.Lock()
	ln, srv, conns, stop := e.ln, e.srv, e.conns, e.stop
	e.ln, e.srv, e.conns, e.stop = nil, nil, nil, nil
	e.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	if srv != nil {
		_ = srv.Close() // closes ln and every connection
	} else if ln != nil {
		_ = ln.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
	e.wg.Wait()
}

// Revive listens again on the server's address after Kill. It fails if the
// port was taken in the meantime.
func (e *Echo) Revive() error {
	e.mu.Lock()
	alive := e.ln != nil
	e.mu.Unlock()
	if alive {
		return nil
	}
	return e.listen(e.addr)
}

// Close stops the server for good.
func (e *Echo) Close() error {
	e.Kill()
	return nil
}

func (e *Echo) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("testenv: echo %s: %w", e.inst.Name, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ln = ln
	if e.http {
		e.srv = &http.Server{Handler: http.HandlerFunc(e.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
		go func(srv *http.Server) { _ = srv.Serve(ln) }(e.srv)
		return nil
	}
	e.conns = map[net.Conn]struct{}{}
	e.stop = make(chan struct{})
	e.wg.Add(1)
	go e.acceptTCP(ln, e.stop)
	return nil
}

func (e *Echo) reply(r *http.Request) EchoReply {
	rep := EchoReply{Cluster: e.inst.Cluster, Zone: e.inst.Zone, Instance: e.inst.Name, Healthy: !e.sick.Load()}
	if r != nil {
		rep.Method, rep.Path = r.Method, r.URL.Path
	}
	return rep
}

// wait waits for the configured delay; false if done ended first.
func (e *Echo) wait(done <-chan struct{}) bool {
	d := time.Duration(e.delay.Load())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// maxBytesBody bounds /bytes/N.
const maxBytesBody = 1 << 20

var zeros = make([]byte, maxBytesBody)

func (e *Echo) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !e.wait(r.Context().Done()) {
		return
	}
	sick := e.sick.Load()
	if r.URL.Path == "/healthz" {
		if sick {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	if n, ok := strings.CutPrefix(r.URL.Path, "/bytes/"); ok && !sick {
		// /bytes/N: N bytes of body (at most 1 MiB), for load tests that
		// want a fixed response size.
		size, err := strconv.Atoi(n)
		if err != nil || size < 0 || size > maxBytesBody {
			http.Error(w, fmt.Sprintf("/bytes/N: N must be 0 to %d", maxBytesBody), http.StatusBadRequest)
			return
		}
		e.count.Add(1)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(zeros[:size])
		return
	}
	if n := e.failEvery.Load(); n > 0 && e.seen.Add(1)%n == 0 {
		http.Error(w, "injected abort", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if sick {
		w.WriteHeader(http.StatusServiceUnavailable)
	} else {
		e.count.Add(1)
	}
	_ = json.NewEncoder(w).Encode(e.reply(r))
}

func (e *Echo) acceptTCP(ln net.Listener, stop chan struct{}) {
	defer e.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.conns == nil { // killed
			e.mu.Unlock()
			_ = c.Close()
			return
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.serveTCP(c, stop)
	}
}

func (e *Echo) serveTCP(c net.Conn, stop chan struct{}) {
	defer e.wg.Done()
	defer func() {
		_ = c.Close()
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
	}()
	if e.sick.Load() {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset, not a clean close
		}
		return
	}
	if !e.wait(stop) {
		return
	}
	line, err := json.Marshal(e.reply(nil))
	if err != nil {
		return
	}
	if _, err := c.Write(append(line, '\n')); err != nil {
		return
	}
	e.count.Add(1)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if !e.wait(stop) {
				return
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readEchoGreeting reads the first line of a TCP echo connection.
func readEchoGreeting(r *bufio.Reader) (EchoReply, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return EchoReply{}, err
	}
	var rep EchoReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return EchoReply{}, errors.New("testenv: echo greeting is not JSON")
	}
	return rep, nil
}
