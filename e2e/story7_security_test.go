package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/testenv"
	"github.com/meshfed/meshfed/trust"
)

// TestSecurity is story 7, against the real processes of the hubs
// federation: east's gateway refuses a gateway whose trust domain is not
// federated (and one forging a member's); a member agent's credential
// cannot open the hub's Sync stream as another cluster, so it cannot
// publish for it; east's gateway refuses a stream for a service east does
// not export. Each refusal is checked beside the same call made as it
// should be, which succeeds.
func TestSecurity(t *testing.T) {
	fed := hubs.get(t)
	baseline(t, fed, "east")
	east, central := fed.Cluster("east"), fed.Cluster("central")
	centralSVID, _ := gatewayIdentity(t, central)
	_, eastBundle := gatewayIdentity(t, east)
	// As every remote gateway reaches east's: through its WAN link.
	eastIngress := east.Gateway().Advertised()

	t.Run("UnfederatedGatewayIsRefused", func(t *testing.T) {
		if st, err := probe(eastIngress, centralSVID, eastBundle); err != nil || st.Code != eastwest.CodeOK {
			t.Fatalf("central's gateway probing east's: %v %v, want ok", st, err)
		}
		// A trust domain no member has and the hub never federated.
		rogue := newCA(t, "rogue.meshfed.local")
		st, err := probe(eastIngress, rogue.gatewaySVID(t), eastBundle)
		if !refusedHandshake(err) {
			t.Errorf("a gateway of the unfederated trust domain %s: %v %v, want the handshake refused by east", rogue.td, st, err)
		}
		t.Logf("rogue.meshfed.local: %v", err)
		// Central's trust domain, but a CA that is not central's: a forged
		// SVID.
		forged := newCA(t, centralSVID.ID.TrustDomain().String())
		st, err = probe(eastIngress, forged.gatewaySVID(t), eastBundle)
		if !refusedHandshake(err) {
			t.Errorf("a forged gateway SVID of central: %v %v, want the handshake refused by east", st, err)
		}
		t.Logf("forged central: %v", err)
	})

	t.Run("AgentCannotPublishForAnotherCluster", func(t *testing.T) {
		conn := hubConnAs(t, east)
		// As itself, east's credential opens the stream: the hub answers
		// the hello.
		if err := syncHello(conn, "east"); err != nil {
			t.Fatalf("east's agent credential opening Sync as east: %v", err)
		}
		// As central, the hub refuses it before any publish: the stream's
		// cluster is the certificate's, and publishes carry no other.
		err := syncHello(conn, "central")
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("east's agent credential opening Sync as central: %v, want PermissionDenied", err)
		}
		t.Logf("east as central: %v", err)
	})

	t.Run("UnexportedServiceIsRefusedAtIngress", func(t *testing.T) {
		for _, c := range []struct {
			h    eastwest.Header
			want eastwest.Code
		}{
			{eastwest.Header{Kind: eastwest.KindConnect, Service: "default/reviews", Port: 80, Source: "central"}, eastwest.CodeOK},
			// internal runs in east and is not exported.
			{eastwest.Header{Kind: eastwest.KindConnect, Service: "default/internal", Port: 80, Source: "central"}, eastwest.CodeUnknownService},
			{eastwest.Header{Kind: eastwest.KindConnect, Service: "default/nosuch", Port: 80, Source: "central"}, eastwest.CodeUnknownService},
			{eastwest.Header{Kind: eastwest.KindConnect, Service: "default/reviews", Port: 81, Source: "central"}, eastwest.CodeUnknownService},
			// Central's gateway claiming to be east's own.
			{eastwest.Header{Kind: eastwest.KindConnect, Service: "default/reviews", Port: 80, Source: "east"}, eastwest.CodeForbidden},
		} {
			st, err := openStream(eastIngress, centralSVID, eastBundle, &c.h)
			if err != nil || st.Code != c.want {
				t.Errorf("%s:%d from %s: %v %v, want %v", c.h.Service, c.h.Port, c.h.Source, st, err, c.want)
			}
		}
	})
}

// probe opens a stream to a gateway's ingress as svid's gateway and sends
// a probe; it returns the gateway's status, or the first error (a refused
// handshake shows here: in TLS 1.3 the server checks the client's
// certificate after the client thinks it is done).
func probe(addr string, svid *x509svid.SVID, server *spiffebundle.Bundle) (eastwest.Status, error) {
	return openStream(addr, svid, server, &eastwest.Header{Kind: eastwest.KindProbe, Source: clusterOf(svid)})
}

// openStream connects to a gateway's ingress over QUIC as svid (verifying
// the gateway against server, its cluster's bundle), opens a stream with
// header h and returns the status the gateway answers.
func openStream(addr string, svid *x509svid.SVID, server *spiffebundle.Bundle, h *eastwest.Header) (eastwest.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bundles := trust.NewBundleSet()
	if err := bundles.Set(server); err != nil {
		return eastwest.Status{}, err
	}
	tc := trust.ClientTLS(staticSVID{svid}, bundles, trust.AuthorizeID(trust.GatewayID(server.TrustDomain())))
	tc.NextProtos = []string{gatewayv1.ALPN}
	qc, err := quic.DialAddr(ctx, addr, tc, &quic.Config{EnableDatagrams: true})
	if err != nil {
		return eastwest.Status{}, err
	}
	defer func() { _ = qc.CloseWithError(0, "") }()
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return eastwest.Status{}, err
	}
	defer s.CancelRead(0)
	b, err := eastwest.AppendHeader(nil, h)
	if err != nil {
		return eastwest.Status{}, err
	}
	if _, err := s.Write(b); err != nil {
		return eastwest.Status{}, err
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	return eastwest.ReadStatus(bufio.NewReader(s))
}

// refusedHandshake reports whether err is the remote end closing the QUIC
// connection with a TLS alert (a CRYPTO_ERROR): the gateway refused the
// client's certificate.
func refusedHandshake(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError()
}

// clusterOf is the cluster a gateway SVID's trust domain names
// (<cluster>.meshfed.local).
func clusterOf(svid *x509svid.SVID) string {
	td := svid.ID.TrustDomain().Name()
	return td[:len(td)-len(".meshfed.local")]
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// testCA is a CA of the test's own, not a member's.
type testCA struct {
	td spiffeid.TrustDomain
	ca *trust.CA
}

func newCA(t testing.TB, td string) *testCA {
	t.Helper()
	rc := trust.DefaultRootConfig()
	rc.TrustDomain = spiffeid.RequireTrustDomainFromString(td)
	root, err := trust.NewRootAuthority(rc, trust.NewFileStore(filepath.Join(t.TempDir(), "root.pem")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Close() })
	ca, err := trust.NewCA(root, trust.DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: rc.TrustDomain, ca: ca}
}

func (c *testCA) gatewaySVID(t testing.TB) *x509svid.SVID {
	t.Helper()
	svid, err := c.ca.IssueX509SVID(trust.GatewayID(c.td))
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// hubConnAs dials the hub with c's agent credential, as the agent does:
// the credentials its join stored in the Secret
// meshfed-system/meshfed-agent-credentials (key "data").
func hubConnAs(t testing.TB, c *testenv.ClusterEnv) *grpc.ClientConn {
	t.Helper()
	ctx := context.Background()
	sec, err := c.Clientset().CoreV1().Secrets(agent.DefaultNamespace).Get(ctx, "meshfed-agent-credentials", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var creds agent.Credentials
	if err := yaml.UnmarshalStrict(sec.Data["data"], &creds); err != nil {
		t.Fatalf("%s's agent credentials: %v", c.Name(), err)
	}
	pair, err := tls.X509KeyPair([]byte(creds.Cert), []byte(creds.Key))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(creds.HubCA)) {
		t.Fatal("no hub CA in the credentials")
	}
	conn, err := hubdial.Dial(creds.HubAddresses, hubtls.ClientConfig(pool, &pair, creds.HubTrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// syncHello opens a Sync stream on conn saying it is cluster's, and
// returns nil once the hub answered the hello, or the stream's error.
func syncHello(conn *grpc.ClientConn, cluster string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := fedv1.NewSyncClient(conn).Sync(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: &fedv1.SyncHello{
		Cluster: cluster, Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion},
	}}}); err != nil {
		return err
	}
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetHello() == nil {
		return fmt.Errorf("the hub's first message is %T, want its hello", m.GetMsg())
	}
	return nil
}
