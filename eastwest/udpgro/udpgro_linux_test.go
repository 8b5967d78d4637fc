package udpgro

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/meshfed/meshfed/internal/pki"
)

// groPair is a receiving groConn and a sending UDP socket on loopback; the
// sender marks its packets ECN-capable (TOS 2) and the receiver reads the TOS byte, as
// quic-go sets them up.
func groPair(t *testing.T) (*groConn, *net.UDPConn) {
	t.Helper()
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	g, ok := Wrap(rc).(*groConn)
	if !ok {
		t.Fatalf("Wrap did not enable UDP_GRO on this kernel")
	}
	setsockopt(t, rc, unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
	if err := g.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	sc, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	setsockopt(t, sc, unix.IPPROTO_IP, unix.IP_TOS, 2)
	return g, sc
}

func setsockopt(t *testing.T, c *net.UDPConn, level, opt, v int) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil || serr != nil {
		t.Fatalf("setsockopt %d/%d: %v %v", level, opt, err, serr)
	}
}

// sendGSO sends b as one sendmsg that the kernel cuts into seg-byte
// datagrams (UDP_SEGMENT), the way quic-go sends a run of packets.
func sendGSO(t *testing.T, c *net.UDPConn, b []byte, seg uint16) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgSpace(0)])) = seg
	if _, _, err := c.WriteMsgUDP(b, oob, nil); err != nil {
		t.Fatalf("sendmsg with UDP_SEGMENT: %v", err)
	}
}

func readMsgs(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

// tos returns the IP_TOS byte among a packet's control messages.
func tos(t *testing.T, oob []byte) byte {
	t.Helper()
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			t.Fatal(err)
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(body) == 1 {
			return body[0]
		}
		oob = rest
	}
	t.Fatalf("no IP_TOS control message")
	return 0
}

func TestGROConnSplitsACoalescedRunIntoPackets(t *testing.T) {
	g, sc := groPair(t)
	// Five packets: four of 1000 bytes and a last of 500, each filled with
	// its own letter.
	var run []byte
	for i, n := range []int{1000, 1000, 1000, 1000, 500} {
		run = append(run, bytes.Repeat([]byte{byte('a' + i)}, n)...)
	}
	sendGSO(t, sc, run, 1000)

	var got [][]byte
	ms := readMsgs(2, 1452) // fewer messages than packets: three calls
	for calls := 0; len(got) < 5; calls++ {
		if calls == 3 {
			t.Fatalf("after 3 reads of 2: %d packets", len(got))
		}
		n, err := g.ReadBatch(ms, 0)
		if err != nil {
			t.Fatal(err)
		}
		if calls == 0 && (g.msgs[0].N != len(run) || len(g.pending) != 5) {
			t.Fatalf("the kernel did not hand over the run whole: first datagram %d bytes, %d packets; want %d and 5", g.msgs[0].N, len(g.pending), len(run))
		}
		for _, m := range ms[:n] {
			if m.Flags != 0 {
				t.Errorf("flags %#x", m.Flags)
			}
			if m.Addr.String() != sc.LocalAddr().String() {
				t.Errorf("packet from %v, want %v", m.Addr, sc.LocalAddr())
			}
			if got := tos(t, m.OOB[:m.NN]); got != 2 {
				t.Errorf("TOS %d, want 2 (ECN-capable)", got)
			}
			got = append(got, append([]byte(nil), m.Buffers[0][:m.N]...))
		}
	}
	for i, p := range got {
		want := 1000
		if i == 4 {
			want = 500
		}
		if len(p) != want || p[0] != byte('a'+i) || p[len(p)-1] != byte('a'+i) {
			t.Errorf("packet %d: %d bytes of %q..%q, want %d of %q", i, len(p), p[0], p[len(p)-1], want, byte('a'+i))
		}
	}
}

func TestGROConnPassesSinglePacketsAndCutsOversizedOnes(t *testing.T) {
	g, sc := groPair(t)
	for _, b := range [][]byte{[]byte("one"), []byte("two"), bytes.Repeat([]byte("x"), 2000)} {
		if _, err := sc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	ms := readMsgs(8, 1452)
	var got []string
	var flags []int
	for len(got) < 3 {
		n, err := g.ReadBatch(ms, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms[:n] {
			got = append(got, string(m.Buffers[0][:min(m.N, 3)]))
			flags = append(flags, m.Flags)
			if len(got) == 3 && m.N != 1452 {
				t.Errorf("oversized datagram: %d bytes handed over, want the buffer's 1452", m.N)
			}
		}
	}
	if got[0] != "one" || got[1] != "two" || got[2] != "xxx" {
		t.Errorf("packets %q", got)
	}
	if flags[0] != 0 || flags[1] != 0 || flags[2] != unix.MSG_TRUNC {
		t.Errorf("flags %#x, want 0, 0, MSG_TRUNC", flags)
	}
}

// TestQUICOverGROConnReceivesCoalescedRuns sends 4 MiB on a QUIC stream
// between two quic-go transports on wrapped sockets: quic-go reads
// through ReadBatch (runs arrive whole) and the bytes arrive intact.
func TestQUICOverGROConnReceivesCoalescedRuns(t *testing.T) {
	listen := func() (*net.UDPConn, *groConn) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		g, ok := Wrap(c).(*groConn)
		if !ok {
			t.Fatal("Wrap did not enable UDP_GRO on this kernel")
		}
		return c, g
	}
	sc, sg := listen()
	cc, cg := listen()
	server := &quic.Transport{Conn: sg}
	client := &quic.Transport{Conn: cg}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close(); _ = sc.Close(); _ = cc.Close() })
	cert, pool := serverCert(t)
	ln, err := server.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"t"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	payload := make([]byte, 4<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		qc, err := ln.Accept(ctx)
		if err != nil {
			got <- nil
			return
		}
		s, err := qc.AcceptStream(ctx)
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(s)
		got <- b
	}()
	qc, err := client.Dial(ctx, sc.LocalAddr(), &tls.Config{RootCAs: pool, ServerName: "udpgro.test", NextProtos: []string{"t"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(payload); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatalf("received %d bytes, not the %d sent", len(b), len(payload))
	}
	if sg.runs.Load() == 0 {
		t.Errorf("the receiving socket saw no coalesced run: quic-go did not read through ReadBatch, or sent without GSO")
	}
	_ = qc.CloseWithError(0, "")
}

// serverCert is a server certificate for "udpgro.test" from a fresh CA
// (the project's own pki), and a pool holding that CA.
func serverCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("udpgro.test", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Sign(key.Public(), pki.LeafOptions{SPIFFEID: "spiffe://udpgro.test/server", DNSNames: []string{"udpgro.test"},
		TTL: time.Hour, Now: now, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, pool
}
