package trust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// fedFixture is a server in trust domain a.test (a real CA) federated with
// b.test, whose CA the test controls, so it can forge what a federated but
// misbehaving (or compromised-and-rotated) CA could sign.
type fedFixture struct {
	aCA     *CA
	server  *SVIDSource
	bundles *BundleSet
	bRoot   *testCert
	evil    *testCert // CA of evil.test, not federated
}

func newFedFixture(t *testing.T) *fedFixture {
	t.Helper()
	aCA, _ := newTestCA(t, "a.test")
	server, err := NewSVIDSource(aCA, GatewayID(aCA.TrustDomain()), DefaultSVIDSourceConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := &fedFixture{aCA: aCA, server: server, bundles: NewBundleSet(), bRoot: forgeCA(t, nil, "b.test"), evil: forgeCA(t, nil, "evil.test")}
	aBundle, err := aCA.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.bundles.Set(aBundle); err != nil {
		t.Fatal(err)
	}
	if err := f.bundles.Set(bundleOf(t, "b.test", f.bRoot)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fedFixture) serverTLS(authz tlsconfig.Authorizer) *tls.Config {
	return ServerTLS(f.server, f.bundles, authz)
}

// clientTLS presents svid and trusts the federation's bundles, expecting
// the server's gateway ID.
func (f *fedFixture) clientTLS(svid *x509svid.SVID) *tls.Config {
	return ClientTLS(svid, f.bundles, AuthorizeID(GatewayID(f.aCA.TrustDomain())))
}

func TestAttacksAreRejected(t *testing.T) {
	f := newFedFixture(t)
	b := f.bRoot
	now := time.Now()
	bInter := forge(t, b, certOpts{cn: "b inter", uris: []string{"spiffe://b.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign})

	cases := []struct {
		name   string
		svid   *x509svid.SVID
		target error
	}{
		{"SVID from a trust domain that is not federated", svidOf(t, forgeLeaf(t, f.evil, "spiffe://evil.test/meshfed/gateway")), ErrNotFederated},
		{"URI SAN names a.test but b.test's CA signed it", svidOf(t, forgeLeaf(t, b, "spiffe://a.test/meshfed/gateway")), ErrPeerRejected},
		{"URI SAN names a.test, chain through b.test's intermediate", svidOf(t, forgeLeaf(t, bInter, "spiffe://a.test/meshfed/gateway"), bInter), ErrPeerRejected},
		{"leaf with CA=true", svidOf(t, forge(t, b, certOpts{uris: []string{"spiffe://b.test/meshfed/gateway"}, isCA: true, keyUsage: x509.KeyUsageDigitalSignature})), ErrPeerRejected},
		{"leaf with keyCertSign", svidOf(t, forge(t, b, certOpts{uris: []string{"spiffe://b.test/meshfed/gateway"}, keyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign})), ErrPeerRejected},
		{"leaf with cRLSign", svidOf(t, forge(t, b, certOpts{uris: []string{"spiffe://b.test/meshfed/gateway"}, keyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign})), ErrPeerRejected},
		{"two URI SANs", svidOf(t, forge(t, b, certOpts{uris: []string{"spiffe://b.test/meshfed/gateway", "spiffe://a.test/meshfed/gateway"}, keyUsage: x509.KeyUsageDigitalSignature})), ErrPeerRejected},
		{"no URI SAN", svidOf(t, forge(t, b, certOpts{dnsNames: []string{"gw.b.test"}, keyUsage: x509.KeyUsageDigitalSignature})), ErrPeerRejected},
		{"non-SPIFFE URI SAN", svidOf(t, forge(t, b, certOpts{uris: []string{"https://b.test/meshfed/gateway"}, keyUsage: x509.KeyUsageDigitalSignature})), ErrPeerRejected},
		{"no digitalSignature", svidOf(t, forge(t, b, certOpts{uris: []string{"spiffe://b.test/meshfed/gateway"}, keyUsage: x509.KeyUsageKeyEncipherment})), ErrPeerRejected},
		{"leaf ID without a path", svidOf(t, forge(t, b, certOpts{uris: []string{"spiffe://b.test"}, keyUsage: x509.KeyUsageDigitalSignature})), ErrPeerRejected},
		{"expired SVID", svidOf(t, forge(t, b, func() certOpts {
			o := leafOpts("spiffe://b.test/meshfed/gateway")
			o.notBefore, o.notAfter = now.Add(-2*time.Hour), now.Add(-time.Minute)
			return o
		}())), ErrPeerRejected},
		{"not yet valid SVID", svidOf(t, forge(t, b, func() certOpts {
			o := leafOpts("spiffe://b.test/meshfed/gateway")
			o.notBefore, o.notAfter = now.Add(time.Hour), now.Add(2*time.Hour)
			return o
		}())), ErrPeerRejected},
		{"self-signed leaf", svidOf(t, forge(t, nil, leafOpts("spiffe://b.test/meshfed/gateway"))), ErrPeerRejected},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			serverErr, clientErr := handshake(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(c.svid))
			if serverErr == nil {
				t.Fatal("the server accepted the handshake")
			}
			if !errors.Is(serverErr, c.target) || !errors.Is(serverErr, ErrPeerRejected) {
				t.Errorf("server error = %v, want %v", serverErr, c.target)
			}
			if clientErr == nil {
				t.Error("the client did not see the rejection")
			}
			t.Logf("rejected: %v", serverErr)
		})
	}
}

func TestPositiveControls(t *testing.T) {
	f := newFedFixture(t)
	aAgent, err := f.aCA.IssueX509SVID(AgentID(f.aCA.TrustDomain()))
	if err != nil {
		t.Fatal(err)
	}
	bInter := forge(t, f.bRoot, certOpts{cn: "b inter", uris: []string{"spiffe://b.test"}, isCA: true, keyUsage: x509.KeyUsageCertSign})
	for name, svid := range map[string]*x509svid.SVID{
		"same trust domain, issued by the CA": aAgent,
		"federated trust domain":              svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway")),
		"federated, through an intermediate":  svidOf(t, forgeLeaf(t, bInter, "spiffe://b.test/ns/shop/sa/web"), bInter),
		"federated, URI SAN with other SANs ok": svidOf(t, forge(t, f.bRoot, func() certOpts {
			o := leafOpts("spiffe://b.test/meshfed/gateway")
			o.dnsNames = []string{"gw"}
			return o
		}())),
	} {
		t.Run(name, func(t *testing.T) {
			mustHandshake(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(svid))
		})
	}
}

func TestAuthorizers(t *testing.T) {
	f := newFedFixture(t)
	bGW := svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway"))
	bWL := svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/ns/shop/sa/web"))
	a, b := td(t, "a.test"), td(t, "b.test")
	for _, c := range []struct {
		name  string
		authz tlsconfig.Authorizer
		svid  *x509svid.SVID
		ok    bool
	}{
		{"member of b", AuthorizeMemberOf(b), bGW, true},
		{"member of a only", AuthorizeMemberOf(a), bGW, false},
		{"exact ID", AuthorizeID(GatewayID(b)), bGW, true},
		{"other ID", AuthorizeID(GatewayID(b)), bWL, false},
		{"gateways", AuthorizeKind(KindGateway), bGW, true},
		{"gateways, workload peer", AuthorizeKind(KindGateway), bWL, false},
		{"nil authorizer refuses", nil, bGW, false},
		{"go-spiffe authorizer", tlsconfig.AuthorizeMemberOf(b), bGW, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			serverErr, _ := handshake(t, f.serverTLS(c.authz), f.clientTLS(c.svid))
			if c.ok && serverErr != nil {
				t.Fatalf("refused: %v", serverErr)
			}
			if !c.ok {
				var ae *AuthorizationError
				if !errors.As(serverErr, &ae) || !errors.Is(serverErr, ErrPeerRejected) {
					t.Fatalf("server error = %v, want an *AuthorizationError", serverErr)
				}
			}
		})
	}
}

func TestClientRejectsServer(t *testing.T) {
	f := newFedFixture(t)
	bGW := svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway"))
	// The client expects b.test's gateway but reaches a.test's.
	client := ClientTLS(bGW, f.bundles, AuthorizeID(GatewayID(td(t, "b.test"))))
	_, clientErr := handshake(t, f.serverTLS(AuthorizeFederated()), client)
	if !errors.Is(clientErr, ErrPeerRejected) {
		t.Errorf("client error = %v, want ErrPeerRejected", clientErr)
	}
	// A server of a trust domain the client does not federate with.
	evilSrc := svidOf(t, forgeLeaf(t, f.evil, "spiffe://evil.test/meshfed/gateway"))
	evilBundles := NewBundleSet()
	if err := evilBundles.Set(bundleOf(t, "b.test", f.bRoot)); err != nil {
		t.Fatal(err)
	}
	_, clientErr = handshake(t, ServerTLS(evilSrc, evilBundles, AuthorizeFederated()), ClientTLS(bGW, f.bundles, AuthorizeFederated()))
	if !errors.Is(clientErr, ErrNotFederated) {
		t.Errorf("client error = %v, want ErrNotFederated", clientErr)
	}
}

func TestRemovedRootAndTrustDomain(t *testing.T) {
	f := newFedFixture(t)
	oldLeaf := svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway"))
	mustHandshake(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(oldLeaf))

	// b.test rotates: its bundle now holds only the new root. A chain to
	// the removed root is refused.
	newRoot := forgeCA(t, nil, "b.test")
	if err := f.bundles.Set(bundleOf(t, "b.test", newRoot)); err != nil {
		t.Fatal(err)
	}
	serverErr, _ := handshake(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(oldLeaf))
	if !errors.Is(serverErr, ErrPeerRejected) {
		t.Errorf("chain to a removed root: %v, want ErrPeerRejected", serverErr)
	}
	newLeaf := svidOf(t, forgeLeaf(t, newRoot, "spiffe://b.test/meshfed/gateway"))
	mustHandshake(t, f.serverTLS(AuthorizeFederated()), f.clientTLS(newLeaf))

	// The cluster leaves the federation: with the same tls.Config, the
	// very next handshake is refused (the config reads the set live).
	server := f.serverTLS(AuthorizeFederated())
	mustHandshake(t, server, f.clientTLS(newLeaf))
	f.bundles.Remove(td(t, "b.test"))
	serverErr, _ = handshake(t, server, f.clientTLS(newLeaf))
	if !errors.Is(serverErr, ErrNotFederated) {
		t.Errorf("after removal: %v, want ErrNotFederated", serverErr)
	}
}

func TestResumedSessionsAreReverified(t *testing.T) {
	f := newFedFixture(t)
	leaf := svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway"))
	server := f.serverTLS(AuthorizeFederated())
	client := f.clientTLS(leaf)
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	client.ServerName = "gateway.a.test" // the session cache key

	connect := func() (resumed bool, serverErr error) {
		t.Helper()
		_, c, serverErr, _ := tlsPair(t, server, client)
		return c.ConnectionState().DidResume, serverErr
	}
	if _, err := connect(); err != nil {
		t.Fatal(err)
	}
	resumed, err := connect()
	if err != nil || !resumed {
		t.Fatalf("second connection: resumed %v, %v", resumed, err)
	}
	f.bundles.Remove(td(t, "b.test"))
	if _, err := connect(); !errors.Is(err, ErrNotFederated) {
		t.Errorf("resumed session after removal: %v, want ErrNotFederated", err)
	}
}

func TestTLSVersion(t *testing.T) {
	f := newFedFixture(t)
	leaf := svidOf(t, forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway"))
	client := f.clientTLS(leaf)
	client.MinVersion, client.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if serverErr, _ := handshake(t, f.serverTLS(AuthorizeFederated()), client); serverErr == nil {
		t.Error("server accepted TLS 1.2")
	}
}

func TestVerifyPeerDirect(t *testing.T) {
	f := newFedFixture(t)
	leaf := forgeLeaf(t, f.bRoot, "spiffe://b.test/meshfed/gateway")
	id, err := VerifyPeer([]*x509.Certificate{leaf.cert}, f.bundles, AuthorizeFederated(), time.Now())
	if err != nil || id != spiffeid.RequireFromString("spiffe://b.test/meshfed/gateway") {
		t.Fatalf("VerifyPeer = %v, %v", id, err)
	}
	if _, err := VerifyPeer(nil, f.bundles, AuthorizeFederated(), time.Now()); !errors.Is(err, ErrPeerRejected) {
		t.Errorf("no certificates: %v", err)
	}
	if _, err := VerifyPeer([]*x509.Certificate{leaf.cert}, f.bundles, AuthorizeFederated(), time.Now().Add(2*time.Hour)); !errors.Is(err, ErrPeerRejected) {
		t.Errorf("verification at a time after expiry: %v", err)
	}
}
