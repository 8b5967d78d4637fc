package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshfed/meshfed/eastwest/udpgro"
)

// The QUIC floor is the least a QUIC tunnel pair can do, as two processes
// like the gateways: A accepts TCP and opens a stream per connection on
// one mutual-TLS QUIC connection to B, which dials the target; both copy
// each way with io.Copy. No header beyond one byte naming the target, no
// routing, HTTP, policy, metrics or failover. Measured in the same run as
// the gateways, it shows what quic-go itself costs on this machine, and so
// how much of the gap to HAProxy is meshfed's own.
//
// The two halves are this test binary run again with MESHFED_QUIC_FLOOR
// set (see TestMain): "b <web> <bulk>" or "a <B's UDP address>", then
// "gro" to receive with UDP GRO as the gateways do (eastwest/udpgro), or
// "plain" for quic-go's own socket, with the certificates of benchPKI in
// MESHFED_QUIC_FLOOR_PKI. Each prints its addresses on stdout and serves
// until its stdin closes.

type quicFloor struct {
	web, bulk string
	pids      []int
}

const floorALPN = "meshfed-floor"

func startQUICFloor(b *testing.B, web, bulk string, gro bool) *quicFloor {
	socket := "plain"
	if gro {
		socket = "gro"
	}
	dir := benchPKI(b)
	start := func(args ...string) (*exec.Cmd, *bufio.Reader) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "MESHFED_QUIC_FLOOR="+strings.Join(args, " "), "MESHFED_QUIC_FLOOR_PKI="+dir)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
		return cmd, bufio.NewReader(out)
	}
	line := func(r *bufio.Reader) string {
		l, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("quic floor: %v", err)
		}
		return strings.TrimSpace(l)
	}
	cb, outB := start("b", web, bulk, socket)
	addrB := line(outB)
	ca, outA := start("a", addrB, socket)
	f := &quicFloor{pids: []int{ca.Process.Pid, cb.Process.Pid}}
	f.web, f.bulk = line(outA), line(outA)
	return f
}

// runQUICFloor is a floor half's main: it serves until stdin closes.
func runQUICFloor(spec, dir string) error {
	args := strings.Fields(spec)
	if len(args) < 2 {
		return fmt.Errorf("quic floor: bad spec %q", spec)
	}
	socket := args[len(args)-1]
	args = args[:len(args)-1]
	if socket != "gro" && socket != "plain" {
		return fmt.Errorf("quic floor: bad spec %q: want gro or plain last", spec)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer func() { _ = pc.Close() }()
	tr := &quic.Transport{Conn: pc}
	if socket == "gro" {
		tr.Conn = udpgro.Wrap(pc)
	}
	defer func() { _ = tr.Close() }()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, args[0]+".pem"), filepath.Join(dir, args[0]+".pem"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	qcfg := &quic.Config{MaxIncomingStreams: 10000, InitialStreamReceiveWindow: 512 << 10,
		MaxStreamReceiveWindow: 8 << 20, InitialConnectionReceiveWindow: 1 << 20, MaxConnectionReceiveWindow: 16 << 20,
		KeepAlivePeriod: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	switch {
	case args[0] == "b" && len(args) == 3:
		ln, err := tr.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots,
			ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{floorALPN}, MinVersion: tls.VersionTLS13}, qcfg)
		if err != nil {
			return err
		}
		fmt.Println(ln.Addr())
		for {
			qc, err := ln.Accept(ctx)
			if err != nil {
				return nil
			}
			go floorServe(ctx, qc, args[1], args[2])
		}
	case args[0] == "a" && len(args) == 2:
		addr, err := net.ResolveUDPAddr("udp", args[1])
		if err != nil {
			return err
		}
		qc, err := tr.Dial(ctx, addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots,
			ServerName: "haproxy-b", NextProtos: []string{floorALPN}, MinVersion: tls.VersionTLS13}, qcfg)
		if err != nil {
			return err
		}
		for i := range 2 { // 0: web, 1: bulk
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			fmt.Println(l.Addr())
			go floorAccept(ctx, l, qc, byte(i))
		}
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("quic floor: bad spec %q", spec)
}

func floorAccept(ctx context.Context, l net.Listener, qc *quic.Conn, target byte) {
	go func() { <-ctx.Done(); _ = l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			s, err := qc.OpenStreamSync(ctx)
			if err != nil {
				_ = c.Close()
				return
			}
			if _, err := s.Write([]byte{target}); err != nil {
				_ = c.Close()
				return
			}
			floorCopy(c.(*net.TCPConn), s)
		}()
	}
}

func floorServe(ctx context.Context, qc *quic.Conn, web, bulk string) {
	for {
		s, err := qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			var which [1]byte
			addr := web
			_, err := io.ReadFull(s, which[:])
			if which[0] == 1 {
				addr = bulk
			}
			var c net.Conn
			if err == nil {
				c, err = net.Dial("tcp", addr)
			}
			if err != nil {
				s.CancelRead(1)
				s.CancelWrite(1)
				return
			}
			floorCopy(c.(*net.TCPConn), s)
		}()
	}
}

// floorCopy copies both ways, half-closing each side at the other's end.
func floorCopy(c *net.TCPConn, s *quic.Stream) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(s, c)
		_ = s.Close()
		close(done)
	}()
	_, _ = io.Copy(c, s)
	_ = c.CloseWrite()
	<-done
	_ = c.Close()
	s.CancelRead(0)
}
