package hub

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// testAgent is the hub side of an agent, enough to join and sync.
type testAgent struct {
	t       testing.TB
	cluster string
	conn    *grpc.ClientConn
	// What it joined with, to renew and to dial other servers.
	key   crypto.Signer
	cert  *x509.Certificate
	pool  *x509.CertPool
	hubTD string
	addrs []string
	// tls is the agent's client TLS configuration, to dial other servers.
	tls *tls.Config
}

// dial connects as a with its certificate to the given hub servers.
func (a *testAgent) dial(addrs ...string) (*grpc.ClientConn, error) {
	tlsCfg := hubtls.ClientConfig(a.pool, &tls.Certificate{Certificate: [][]byte{a.cert.Raw}, PrivateKey: a.key, Leaf: a.cert}, a.hubTD)
	return hubdial.Dial(addrs, tlsCfg)
}

// renew asks for a new certificate for key (a fresh one when nil) and
// returns an agent holding it, connected to the same servers.
func (a *testAgent) renew(ctx context.Context, key crypto.Signer) (*testAgent, error) {
	if key == nil {
		var err error
		if key, err = pki.NewKey(); err != nil {
			return nil, err
		}
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return nil, err
	}
	resp, err := fedv1.NewSyncClient(a.conn).Renew(ctx, &fedv1.RenewRequest{Csr: csr})
	if err != nil {
		return nil, err
	}
	certs, err := x509pem.DecodeCerts(resp.GetClientCertificate())
	if err != nil {
		return nil, err
	}
	n := &testAgent{t: a.t, cluster: a.cluster, key: key, cert: certs[0], pool: a.pool, hubTD: a.hubTD, addrs: a.addrs}
	if n.conn, err = n.dial(a.addrs...); err != nil {
		return nil, err
	}
	if a.t != nil {
		a.t.Cleanup(func() { _ = n.conn.Close() })
	}
	return n, nil
}

// join redeems token for cluster with its default trust domain; it returns
// the gRPC error unchanged.
func join(ctx context.Context, token, cluster string) (*testAgent, *fedv1.JoinResponse, error) {
	return joinTD(ctx, token, cluster, cluster+".meshfed.local")
}

// joinTD is join with the trust domain td.
func joinTD(ctx context.Context, token, cluster, td string) (*testAgent, *fedv1.JoinResponse, error) {
	return joinKey(ctx, token, cluster, td, nil)
}

// joinKey is join with the trust domain td and a CSR for key (a fresh key
// when nil).
func joinKey(ctx context.Context, token, cluster, td string, key crypto.Signer) (*testAgent, *fedv1.JoinResponse, error) {
	jt, err := federation.ParseJoinToken(token)
	if err != nil {
		return nil, nil, err
	}
	conn, err := hubdial.Dial(jt.Addrs, hubtls.PinnedConfig(jt.CAFingerprint)) // as the agent does
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = conn.Close() }()
	if key == nil {
		if key, err = pki.NewKey(); err != nil {
			return nil, nil, err
		}
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return nil, nil, err
	}
	resp, err := fedv1.NewJoinClient(conn).Join(ctx, &fedv1.JoinRequest{
		Token: token, Cluster: cluster,
		Locality:     &fedv1.Locality{Region: "r-" + cluster, Zone: "z-" + cluster},
		TrustBundle:  mustBundle(td),
		Csr:          csr,
		Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion},
	})
	if err != nil {
		return nil, nil, err
	}
	certs, err := x509pem.DecodeCerts(resp.GetClientCertificate())
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(resp.GetHubCa())
	a := &testAgent{cluster: cluster, key: key, cert: certs[0], pool: pool, hubTD: resp.GetSettings().GetHubTrustDomain(), addrs: jt.Addrs[:1]}
	tlsCfg := hubtls.ClientConfig(pool, &tls.Certificate{Certificate: [][]byte{certs[0].Raw}, PrivateKey: key, Leaf: certs[0]}, a.hubTD)
	aconn, err := grpc.NewClient("passthrough:///"+jt.Addrs[0], grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, nil, err
	}
	a.conn, a.tls = aconn, tlsCfg
	return a, resp, nil
}

func mustBundle(td string) *fedv1.TrustBundle {
	ca, err := pki.NewCA(td, time.Hour, time.Now())
	if err != nil {
		panic(err)
	}
	return &fedv1.TrustBundle{TrustDomain: td, X509Authorities: [][]byte{ca.Cert.Raw}, RefreshHintSeconds: 60, SequenceNumber: 1}
}

// joinCluster creates a token through admin and joins with it.
func joinCluster(t testing.TB, admin fedv1.AdminClient, cluster string) *testAgent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := join(ctx, tok.GetToken(), cluster)
	if err != nil {
		t.Fatalf("join %s: %v", cluster, err)
	}
	a.t = t
	t.Cleanup(func() { _ = a.conn.Close() })
	return a
}

// syncStream is an open Sync stream with a local view of the catalog.
type syncStream struct {
	t        testing.TB
	stream   fedv1.Sync_SyncClient
	cancel   context.CancelFunc
	revision uint64
	exports  map[string]*fedv1.ExportRecord // cluster/ns/name
	clusters map[string]*fedv1.ClusterRecord
	resets   int
}

func (a *testAgent) sync(resume uint64, helloCluster string) (*syncStream, error) {
	return a.syncHello(resume, &fedv1.SyncHello{Cluster: helloCluster})
}

// syncHello opens a Sync stream with the given hello (Cluster defaults to
// the agent's, Capabilities to ours).
func (a *testAgent) syncHello(resume uint64, hello *fedv1.SyncHello) (*syncStream, error) {
	helloCluster := hello.GetCluster()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := fedv1.NewSyncClient(a.conn).Sync(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if helloCluster == "" {
		helloCluster = a.cluster
	}
	hello = proto.Clone(hello).(*fedv1.SyncHello)
	hello.Cluster, hello.ResumeRevision = helloCluster, resume
	if hello.Capabilities == nil {
		hello.Capabilities = &fedv1.Capabilities{Version: federation.CapabilityVersion}
	}
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: hello}}); err != nil {
		cancel()
		return nil, err
	}
	m, err := st.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	if m.GetHello() == nil {
		cancel()
		return nil, fmt.Errorf("first message is %T, want hello", m.GetMsg())
	}
	s := &syncStream{t: a.t, stream: st, cancel: cancel, revision: resume,
		exports: map[string]*fedv1.ExportRecord{}, clusters: map[string]*fedv1.ClusterRecord{}}
	a.t.Cleanup(cancel)
	return s, nil
}

// next applies messages until one matches pred, returning it.
func (s *syncStream) next(pred func(*fedv1.SyncResponse) bool) (*fedv1.SyncResponse, error) {
	for {
		m, err := s.stream.Recv()
		if err != nil {
			return nil, err
		}
		if d := m.GetDelta(); d != nil {
			s.apply(d)
		}
		if pred(m) {
			return m, nil
		}
	}
}

func (s *syncStream) apply(d *fedv1.SyncDelta) {
	if d.GetReset_() {
		s.resets++
		s.exports = map[string]*fedv1.ExportRecord{}
		s.clusters = map[string]*fedv1.ClusterRecord{}
	}
	for _, c := range d.GetClusters() {
		s.clusters[c.GetName()] = c
	}
	for _, c := range d.GetRemovedClusters() {
		delete(s.clusters, c)
	}
	for _, e := range d.GetExports() {
		s.exports[e.GetCluster()+"/"+e.GetService().GetNamespace()+"/"+e.GetService().GetName()] = e
	}
	for _, r := range d.GetRemovedExports() {
		delete(s.exports, r.GetCluster()+"/"+r.GetService())
	}
	if d.GetRevision() != 0 {
		s.revision = d.GetRevision()
	}
}

// waitRevision applies deltas until the view has reached rev.
func (s *syncStream) waitRevision(rev uint64) error {
	if s.revision >= rev {
		return nil
	}
	_, err := s.next(func(*fedv1.SyncResponse) bool { return s.revision >= rev })
	return err
}

func (s *syncStream) publish(nonce uint64, upserts []*fedv1.ExportedService, deletes ...string) (*fedv1.PublishResult, error) {
	if err := s.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Publish{Publish: &fedv1.PublishExports{
		Nonce: nonce, Upserts: upserts, Deletes: deletes,
	}}}); err != nil {
		return nil, err
	}
	m, err := s.next(func(m *fedv1.SyncResponse) bool { return m.GetPublishResult().GetNonce() == nonce })
	if err != nil {
		return nil, err
	}
	return m.GetPublishResult(), nil
}

// publishRetrying publishes as an agent does: a result of Unavailable (a
// leader change under way: the outcome is unknown, and publishing the same
// exports again is safe) is retried with a new nonce, for up to 10 s.
func (s *syncStream) publishRetrying(nonce uint64, upserts []*fedv1.ExportedService, deletes ...string) (*fedv1.PublishResult, error) {
	deadline := time.Now().Add(10 * time.Second)
	for attempt := uint64(0); ; attempt++ {
		res, err := s.publish(nonce<<16|attempt, upserts, deletes...)
		if err != nil || res.GetErrorCode() != codes.Unavailable.String() || time.Now().After(deadline) {
			return res, err
		}
	}
}

func svc(ns, name string, ready uint32) *fedv1.ExportedService {
	return &fedv1.ExportedService{
		Namespace: ns, Name: name,
		Ports:     []*fedv1.ServicePort{{Name: "http", Port: 8080, Protocol: "HTTP"}},
		Endpoints: []*fedv1.EndpointGroup{{Zone: "z1", Ready: ready, Labels: map[string]string{"version": "v1"}}},
	}
}
