package trust

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	federationv1 "github.com/meshfed/meshfed/federation/v1"
)

// The fuzzers below cover every parser in this package. Their seeds are
// added with f.Add so `go test` runs them as regression cases; run one with
// `go test -fuzz FuzzName -fuzztime 30s ./trust`.

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://west.meshfed.local/ns/shop/sa/web",
		"spiffe://a.test/ns/a/sa/b.c-d",
		"spiffe://a.test/meshfed/gateway",
		"spiffe://a.test/meshfed/agent",
		"spiffe://a.test/ns//sa/x",
		"spiffe://a.test/ns/a/sa/b/",
		"spiffe://a.test/ns/%41/sa/b",
		"spiffe://a.test:80/meshfed/agent",
		"spiffe://user@a.test/meshfed/agent",
		"spiffe://a.test/meshfed/agent?x=1",
		"spiffe://a.test/meshfed/agent#f",
		"spiffe://a.test/./meshfed/agent",
		"spiffe://a.test/ns/a/sa/..",
		"SPIFFE://a.test/meshfed/agent",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			if !isErr(err, ErrInvalidID) {
				t.Fatalf("error %v does not match ErrInvalidID", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("ParseIdentity(%q).String() = %q", s, id.String())
		}
		switch id.Kind() {
		case KindWorkload:
			w, err := WorkloadID(id.TrustDomain(), id.Namespace(), id.ServiceAccount())
			if err != nil || w != id.ID() {
				t.Fatalf("WorkloadID(%v, %q, %q) = %v, %v; want %v", id.TrustDomain(), id.Namespace(), id.ServiceAccount(), w, err, id.ID())
			}
		case KindGateway:
			if GatewayID(id.TrustDomain()) != id.ID() {
				t.Fatalf("gateway %v is not GatewayID", id)
			}
		case KindAgent:
			if AgentID(id.TrustDomain()) != id.ID() {
				t.Fatalf("agent %v is not AgentID", id)
			}
		default:
			t.Fatalf("kind %v", id.Kind())
		}
	})
}

func FuzzParseProfile(f *testing.F) {
	for _, s := range []string{"https_web", "https_spiffe", "https", "HTTPS_WEB", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseProfile(s)
		if err == nil && p.String() != s {
			t.Fatalf("ParseProfile(%q).String() = %q", s, p.String())
		}
	})
}

// fuzzNow is the fixed time the intermediate fuzzer checks validity at.
var fuzzNow = time.Now()

func FuzzParseIntermediate(f *testing.F) {
	p := newOpPKI(f)
	chain := pemOf(p.inter.cert, p.root.cert)
	key := keyPEMOf(f, p.inter.key)
	f.Add(chain, key, []byte(nil))
	f.Add(pemOf(p.inter.cert), key, pemOf(p.root.cert))
	f.Add(pemOf(p.root.cert, p.inter.cert), key, []byte(nil))
	f.Add(chain, keyPEMOf(f, p.root.key), []byte(nil))
	f.Add([]byte("junk"), key, []byte(nil))
	f.Add(chain, key, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	west := td(f, "west.test")
	f.Fuzz(func(t *testing.T, chainPEM, keyPEM, rootsPEM []byte) {
		m, err := parseIntermediate(west, chainPEM, keyPEM, rootsPEM, fuzzNow)
		if err != nil {
			if !isErr(err, ErrInvalidAuthority) {
				t.Fatalf("error %v does not match ErrInvalidAuthority", err)
			}
			return
		}
		if len(m.chain) == 0 || len(m.roots) == 0 || !keyMatches(m.key, m.chain[0]) {
			t.Fatalf("accepted material is inconsistent: %d chain, %d roots", len(m.chain), len(m.roots))
		}
		if err := checkAuthorities(west, m.roots); err != nil {
			t.Fatalf("accepted roots fail checkAuthorities: %v", err)
		}
	})
}

func FuzzDecodeRootState(f *testing.F) {
	clk := newFakeClock(f)
	cfg := testRootConfig(f, "west.test", clk)
	s := newMemStore(f)
	a := newRootAuthority(f, cfg, s)
	f.Add(append([]byte(nil), s.data...))
	if _, err := a.Rotate(); err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), s.data...))
	f.Add([]byte("-----BEGIN MESHFED ROOT STATE-----\nFormat: 1\nTrust-Domain: west.test\nSequence: 1\n\n-----END MESHFED ROOT STATE-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeRootState(cfg.TrustDomain, data)
		if err != nil {
			if !isErr(err, ErrInvalidAuthority) {
				t.Fatalf("error %v does not match ErrInvalidAuthority", err)
			}
			return
		}
		enc, err := encodeRootState(cfg.TrustDomain, st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := decodeRootState(cfg.TrustDomain, enc)
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		enc2, err := encodeRootState(cfg.TrustDomain, st2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %v", err)
		}
	})
}

func FuzzBundleFromProto(f *testing.F) {
	a := forgeCA(f, nil, "a.test")
	for _, p := range []*federationv1.TrustBundle{
		{TrustDomain: "a.test", X509Authorities: [][]byte{a.cert.Raw}, RefreshHintSeconds: 300, SequenceNumber: 3},
		{TrustDomain: "a.test", X509Authorities: [][]byte{a.cert.Raw, a.cert.Raw}},
		{TrustDomain: "b.test", X509Authorities: [][]byte{a.cert.Raw}},
		{TrustDomain: "a.test", X509Authorities: [][]byte{{0x30, 0x00}}},
		{TrustDomain: "a.test", RefreshHintSeconds: -5},
	} {
		b, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p federationv1.TrustBundle
		if err := proto.Unmarshal(data, &p); err != nil {
			return
		}
		b, err := BundleFromProto(&p)
		if err != nil {
			if !isErr(err, ErrInvalidBundle) {
				t.Fatalf("error %v does not match ErrInvalidBundle", err)
			}
			return
		}
		back, err := BundleFromProto(BundleToProto(b))
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if !back.Equal(b) {
			t.Fatal("round trip changed the bundle")
		}
	})
}

func FuzzParseBundleDocument(f *testing.F) {
	a := forgeCA(f, nil, "a.test")
	doc, err := bundleOf(f, "a.test", a).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","use":"x509-svid","x5c":[]}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","use":"jwt-svid","kid":"k","crv":"P-256","x":"","y":""}],"spiffe_refresh_hint":-1}`))
	f.Add([]byte(`null`))
	aTD := td(f, "a.test")
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundleDocument(aTD, data)
		if err != nil {
			if !isErr(err, ErrInvalidBundle) {
				t.Fatalf("error %v does not match ErrInvalidBundle", err)
			}
			return
		}
		out, err := b.Marshal()
		if err != nil {
			t.Fatalf("accepted bundle does not marshal: %v", err)
		}
		back, err := ParseBundleDocument(aTD, out)
		if err != nil || !back.X509Bundle().Equal(b.X509Bundle()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
