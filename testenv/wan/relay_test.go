package wan

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshfed/meshfed/internal/wait"
)

// quicSizes are datagram sizes a QUIC connection sends: a padded Initial
// (1200), a full Ethernet-sized packet (1500) and more, for paths that
// probe a larger MTU.
var quicSizes = []int{1200, 1500, 1600, 9000}

// Two clients of one UDP relay each reach the target from their own
// upstream address and each gets only its own answers, with QUIC-sized
// datagrams carried whole.
func TestUDPRelayKeepsClientsApart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pn := newPacketNet()
		link := NewLink(1)
		t.Cleanup(func() { _ = link.Close() })
		if err := link.ServeUDP(pn.listen("relay"), memAddr("target"), pn.listener()); err != nil {
			t.Fatal(err)
		}
		link.Set(Latency(10*time.Millisecond), Jitter(5*time.Millisecond))
		target := pn.listen("target")
		t.Cleanup(func() { _ = target.Close() }) // ends the echo
		var mu sync.Mutex
		peers := map[string]bool{}
		go func() { // echo, noting who asked
			buf := make([]byte, maxDatagram)
			for {
				n, from, err := target.ReadFrom(buf)
				if err != nil {
					return
				}
				mu.Lock()
				peers[from.String()] = true
				mu.Unlock()
				_, _ = target.WriteTo(buf[:n], from)
			}
		}()
		clients := []*memPacketConn{pn.listen("client-a"), pn.listen("client-b")}
		for _, size := range quicSizes {
			for i, c := range clients {
				_, _ = c.WriteTo(bytes.Repeat([]byte{byte('a' + i)}, size), memAddr("relay"))
			}
		}
		time.Sleep(time.Second)
		synctest.Wait()
		for i, c := range clients {
			var sizes []int
			for _, d := range received(c) {
				if d.from.String() != "relay" {
					t.Errorf("client %d: an answer from %v, want from the relay", i, d.from)
				}
				if strings.Trim(string(d.data), string(rune('a'+i))) != "" {
					t.Errorf("client %d got another client's answer", i)
				}
				sizes = append(sizes, len(d.data))
			}
			slices.Sort(sizes)
			if !slices.Equal(sizes, quicSizes) {
				t.Errorf("client %d: answers of sizes %v, want %v", i, sizes, quicSizes)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(peers) != 2 || peers["client-a"] || peers["client-b"] || peers["relay"] {
			t.Fatalf("the target saw peers %v, want two upstream sockets of the relay", peers)
		}
	})
}

// The relays on real loopback sockets: a TCP echo through the relay.
func TestRelayTCPLoopbackEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer func() { _ = c.Close() }(); _, _ = io.Copy(c, c) }()
		}
	}()
	l := NewLink(1)
	defer func() { _ = l.Close() }()
	l.Set(Latency(time.Millisecond))
	addr, err := l.Relay("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // guards against a hang only
	want := bytes.Repeat([]byte("meshfed "), 10_000)
	go func() { _, _ = c.Write(want) }()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the echo through the TCP relay differs from what was sent")
	}
	// The relay counts a chunk after its write returns, which may be
	// after the client has read it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = wait.Poll(ctx, wait.Backoff{Min: time.Millisecond, Max: 50 * time.Millisecond}, "stats of the echo",
		func(context.Context) error {
			if fwd, rev := l.Stats(); fwd.Conns != 1 || fwd.Bytes != int64(len(want)) || rev.Bytes != int64(len(want)) {
				return fmt.Errorf("stats %+v %+v", fwd, rev)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
}

// On real loopback sockets, two clients echo QUIC-sized datagrams through
// one UDP relay at once, each getting its own answers; a partition then
// drops their datagrams silently (writes succeed, nothing is refused, and
// nothing sent during it arrives later).
func TestRelayUDPLoopbackTwoClientsAndBlackhole(t *testing.T) {
	upstream, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = upstream.Close() }()
	var mu sync.Mutex
	peers := map[string]bool{}
	go func() { // UDP echo, noting who asked
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := upstream.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			peers[from.String()] = true
			mu.Unlock()
			_, _ = upstream.WriteTo(buf[:n], from)
		}
	}()
	l := NewLink(1)
	defer func() { _ = l.Close() }()
	addr, err := l.Relay("udp", upstream.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for range 2 {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		// Loopback UDP with no loss configured does not drop; a deadline
		// guards against a hang if it ever does.
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		clients = append(clients, c)
	}
	echo := func(c net.Conn, msg []byte) error {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		buf := make([]byte, maxDatagram)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if !bytes.Equal(buf[:n], msg) {
			return fmt.Errorf("got %d bytes %.20q..., want %d bytes %.20q...", n, buf[:n], len(msg), msg)
		}
		return nil
	}
	errs := make(chan error, len(clients))
	for i, c := range clients {
		go func() {
			for round := range 20 {
				for _, size := range quicSizes {
					msg := bytes.Repeat(fmt.Appendf(nil, "client %d round %d;", i, round), size/16+1)[:size]
					if err := echo(c, msg); err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if len(peers) != 2 {
		t.Fatalf("the target saw peers %v, want one upstream socket per client", peers)
	}
	mu.Unlock()

	l.Partition()
	const during = 5
	for i, c := range clients {
		for range during {
			if _, err := c.Write([]byte("during the partition")); err != nil {
				t.Fatalf("client %d: a write into a partition failed: %v (want it dropped silently)", i, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = wait.Poll(ctx, wait.Backoff{Min: time.Millisecond, Max: 50 * time.Millisecond}, "partitioned datagrams counted as blocked",
		func(context.Context) error {
			if fwd, _ := l.Stats(); fwd.Blocked != during*int64(len(clients)) {
				return fmt.Errorf("blocked %d, want %d", fwd.Blocked, during*len(clients))
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	l.Heal()
	// The first answer after the heal is to the first datagram sent after
	// it: nothing from the partition arrived, and no error was reported.
	for i, c := range clients {
		if err := echo(c, fmt.Appendf(nil, "client %d after the heal", i)); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
}

// The package is usable without the rest of testenv: it depends on the
// standard library only, in particular on no Kubernetes, etcd, testenv, hub
// or agent package.
func TestDependsOnStandardLibraryOnly(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command on PATH: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/meshfed/meshfed/testenv/wan"
	forbidden := []string{"k8s.io/", "go.etcd.io/", "github.com/meshfed/meshfed/testenv", "github.com/meshfed/meshfed/hub", "github.com/meshfed/meshfed/agent"}
	var deps []string
	for dep := range strings.FieldsSeq(string(out)) {
		if dep == self {
			continue
		}
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("testenv/wan depends on %s", dep)
			}
		}
		deps = append(deps, dep)
	}
	if len(deps) > 0 {
		t.Errorf("testenv/wan depends on packages outside the standard library: %v", deps)
	}
	if !strings.Contains(string(out), self) {
		t.Fatalf("go list did not list the package itself; output %q", out)
	}
}
