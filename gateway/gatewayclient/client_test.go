package gatewayclient

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// fakeAgent is the agent side of the gateway API in miniature: a real CA
// and real mTLS, and a Stream that plays scripted messages, one script per
// call.
type fakeAgent struct {
	gatewayv1.UnimplementedConfigServer
	ca      *trust.CA
	token   string
	streams chan []*gatewayv1.StreamResponse // one script per Stream call
	opened  chan int32                       // the number of each Stream call, as it starts
	n       atomic.Int32
}

func (f *fakeAgent) SignSVID(_ context.Context, req *gatewayv1.SignSVIDRequest) (*gatewayv1.SignSVIDResponse, error) {
	if req.GetBootstrapToken() != f.token {
		return nil, status.Error(codes.PermissionDenied, "bootstrap_token: wrong")
	}
	chain, err := f.ca.SignCSR(req.GetCsr(), trust.GatewayID(f.ca.TrustDomain()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &gatewayv1.SignSVIDResponse{}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	return resp, nil
}

func (f *fakeAgent) Stream(_ *gatewayv1.StreamRequest, st gatewayv1.Config_StreamServer) error {
	n := f.n.Add(1)
	f.opened <- n
	script, ok := <-f.streams
	if !ok {
		<-st.Context().Done()
		return nil
	}
	for _, m := range script {
		if err := st.Send(m); err != nil {
			return err
		}
	}
	if n == 1 {
		return status.Error(codes.Unavailable, "agent restarting") // cut mid-change
	}
	<-st.Context().Done()
	return nil
}

type memStore struct{ b []byte }

func (m *memStore) Load() ([]byte, error) {
	if m.b == nil {
		return nil, trust.ErrNotFound
	}
	return m.b, nil
}
func (m *memStore) Save(b []byte) error { m.b = append([]byte(nil), b...); return nil }

func TestClientAppliesASplitChangeWhole(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("east.meshfed.local")
	rc := trust.DefaultRootConfig()
	rc.TrustDomain = td
	root, err := trust.NewRootAuthority(rc, &memStore{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	ca, err := trust.NewCA(root, trust.DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	svids, err := trust.NewSVIDSource(ca, trust.AgentID(td), trust.DefaultSVIDSourceConfig())
	if err != nil {
		t.Fatal(err)
	}
	fa := &fakeAgent{ca: ca, token: testToken, streams: make(chan []*gatewayv1.StreamResponse), opened: make(chan int32, 4)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert, GetCertificate: tlsconfig.GetCertificate(svids),
	})))
	gatewayv1.RegisterConfigServer(srv, fa)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	bundle, err := root.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := EncodeBootstrap("east", testToken, bundle)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Agent: ln.Addr().String(), Bootstrap: doc, Instance: "gw-0", ReconnectMin: time.Millisecond, ReconnectMax: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		close(fa.streams)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	imp := func(k string) *gatewayv1.Import { return &gatewayv1.Import{Service: k} }
	// Stream 1: the first half of a split snapshot, then the stream breaks.
	if n := <-fa.opened; n != 1 {
		t.Fatalf("stream %d", n)
	}
	fa.streams <- []*gatewayv1.StreamResponse{{Revision: 1, Snapshot: true, More: true, Imports: []*gatewayv1.Import{imp("default/a")}}}
	// The client opens stream 2 only after it handled the break: whatever
	// it shows now, it shows after the half change.
	if n := <-fa.opened; n != 2 {
		t.Fatalf("stream %d", n)
	}
	if s, synced := c.State(); synced || len(s.Imports) != 0 {
		t.Fatalf("the client shows half a snapshot: synced %v, imports %v", synced, s.Imports)
	}
	// Stream 2: a whole split snapshot.
	fa.streams <- []*gatewayv1.StreamResponse{
		{Revision: 1, Snapshot: true, More: true, Imports: []*gatewayv1.Import{imp("default/a")}},
		{Revision: 2, Imports: []*gatewayv1.Import{imp("default/b")}},
	}
	watch := c.Watch()
	deadline := time.After(10 * time.Second)
	for {
		if s, synced := c.State(); synced {
			if len(s.Imports) != 2 || s.Revision != 2 {
				t.Fatalf("state after the whole snapshot: revision %d, imports %v", s.Revision, s.Imports)
			}
			break
		}
		select {
		case <-watch:
		case <-deadline:
			t.Fatal("the whole snapshot never showed")
		}
	}
	svid, err := c.GetX509SVID()
	if err != nil || svid.ID != trust.GatewayID(td) {
		t.Fatalf("SVID %v, %v", svid, err)
	}
}
