package trust

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	federationv1 "github.com/meshfed/meshfed/federation/v1"
)

func bundleOf(t testing.TB, name string, cas ...*testCert) *spiffebundle.Bundle {
	t.Helper()
	b := spiffebundle.New(td(t, name))
	for _, c := range cas {
		b.AddX509Authority(c.cert)
	}
	b.SetRefreshHint(5 * time.Minute)
	b.SetSequenceNumber(7)
	return b
}

func TestBundleSet(t *testing.T) {
	s := NewBundleSet()
	ch, stop := s.Watch()
	defer stop()
	a, b := forgeCA(t, nil, "a.test"), forgeCA(t, nil, "b.test")
	if err := s.Set(bundleOf(t, "a.test", a)); err != nil {
		t.Fatal(err)
	}
	<-ch
	if err := s.Set(bundleOf(t, "b.test", b)); err != nil {
		t.Fatal(err)
	}
	<-ch
	// Setting an equal bundle is not a change.
	if err := s.Set(bundleOf(t, "b.test", b)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Error("an unchanged Set notified watchers")
	default:
	}
	if s.Len() != 2 || !s.Has(td(t, "a.test")) {
		t.Fatalf("Len = %d", s.Len())
	}
	all := s.All()
	if len(all) != 2 || all[0].TrustDomain().Name() != "a.test" || all[1].TrustDomain().Name() != "b.test" {
		t.Fatalf("All = %v", all)
	}
	// Copies: changing what All or Get returned does not change the set.
	all[0].AddX509Authority(b.cert)
	got, _ := s.Get(td(t, "a.test"))
	got.RemoveX509Authority(a.cert)
	xb, err := s.GetX509BundleForTrustDomain(td(t, "a.test"))
	if err != nil || len(xb.X509Authorities()) != 1 || !xb.X509Authorities()[0].Equal(a.cert) {
		t.Fatalf("set modified through a returned copy: %v %v", xb, err)
	}
	// Bundles are never merged: b's authority is not in a's bundle.
	if xb.HasX509Authority(b.cert) {
		t.Error("trust domains were merged")
	}
	if !s.Remove(td(t, "a.test")) || s.Remove(td(t, "a.test")) {
		t.Error("Remove reported wrongly")
	}
	<-ch
	if _, err := s.GetX509BundleForTrustDomain(td(t, "a.test")); !errors.Is(err, ErrNotFederated) {
		t.Errorf("removed trust domain: %v, want ErrNotFederated", err)
	}
	if _, err := s.GetBundleForTrustDomain(td(t, "zzz.test")); !errors.Is(err, ErrNotFederated) {
		t.Errorf("unknown trust domain: %v", err)
	}
	if got := s.TrustDomains(); len(got) != 1 || got[0].Name() != "b.test" {
		t.Errorf("TrustDomains = %v", got)
	}
	c := forgeCA(t, nil, "c.test")
	if err := s.Replace([]*spiffebundle.Bundle{bundleOf(t, "a.test", a), bundleOf(t, "c.test", c)}); err != nil {
		t.Fatal(err)
	}
	if got := s.TrustDomains(); len(got) != 2 || got[0].Name() != "a.test" || got[1].Name() != "c.test" {
		t.Errorf("after Replace: %v", got)
	}
	if err := s.Replace([]*spiffebundle.Bundle{bundleOf(t, "a.test", a), bundleOf(t, "a.test", a)}); !errors.Is(err, ErrInvalidBundle) {
		t.Errorf("Replace with a duplicate: %v", err)
	}
}

func TestBundleSetRejects(t *testing.T) {
	s := NewBundleSet()
	leaf := forgeLeaf(t, forgeCA(t, nil, "a.test"), "spiffe://a.test/x")
	many := spiffebundle.New(td(t, "a.test"))
	for i := 0; i <= MaxBundleAuthorities; i++ {
		many.AddX509Authority(forgeCA(t, nil, "a.test").cert)
	}
	neg := bundleOf(t, "a.test", forgeCA(t, nil, "a.test"))
	neg.SetRefreshHint(-time.Second)
	for name, c := range map[string]struct {
		b      *spiffebundle.Bundle
		target error
	}{
		"empty":                       {spiffebundle.New(td(t, "a.test")), ErrInvalidBundle},
		"leaf as authority":           {bundleOf(t, "a.test", leaf), ErrInvalidBundle},
		"another trust domain's root": {bundleOf(t, "a.test", forgeCA(t, nil, "b.test")), ErrTrustDomainMismatch},
		"too many":                    {many, ErrInvalidBundle},
		"negative refresh hint":       {neg, ErrInvalidBundle},
	} {
		if err := s.Set(c.b); !errors.Is(err, c.target) {
			t.Errorf("%s: Set = %v, want %v", name, err, c.target)
		}
	}
	if s.Len() != 0 {
		t.Error("a rejected bundle was stored")
	}
	// A root without a SPIFFE URI SAN (a corporate root) cannot be
	// attributed and is accepted.
	corp := forge(t, nil, certOpts{cn: "Corp Root", isCA: true, keyUsage: x509.KeyUsageCertSign})
	if err := s.Set(bundleOf(t, "a.test", corp)); err != nil {
		t.Errorf("corporate root: %v", err)
	}
}

func TestBundleProtoRoundTrip(t *testing.T) {
	a1, a2 := forgeCA(t, nil, "a.test"), forgeCA(t, nil, "a.test")
	b := bundleOf(t, "a.test", a1, a2)
	b.SetRefreshHint(1500 * time.Millisecond)
	p := BundleToProto(b)
	if p.GetTrustDomain() != "a.test" || len(p.GetX509Authorities()) != 2 || p.GetRefreshHintSeconds() != 2 || p.GetSequenceNumber() != 7 {
		t.Fatalf("proto = %v", p)
	}
	back, err := BundleFromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	if !back.X509Bundle().Equal(b.X509Bundle()) {
		t.Error("authorities changed in the round trip")
	}
	if h, _ := back.RefreshHint(); h != 2*time.Second {
		t.Errorf("refresh hint = %v", h)
	}
	if seq, _ := back.SequenceNumber(); seq != 7 {
		t.Errorf("sequence = %d", seq)
	}
	p.RefreshHintSeconds = 0
	back, err = BundleFromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := back.RefreshHint(); ok {
		t.Error("refresh_hint_seconds 0 became a hint")
	}

	for name, p := range map[string]*federationv1.TrustBundle{
		"nil":              nil,
		"bad trust domain": {TrustDomain: "A.test", X509Authorities: [][]byte{a1.cert.Raw}},
		"URI trust domain": {TrustDomain: "spiffe://a.test", X509Authorities: [][]byte{a1.cert.Raw}},
		"garbage DER":      {TrustDomain: "a.test", X509Authorities: [][]byte{{1, 2, 3}}},
		"no authorities":   {TrustDomain: "a.test"},
		"negative hint":    {TrustDomain: "a.test", X509Authorities: [][]byte{a1.cert.Raw}, RefreshHintSeconds: -1},
		"huge hint":        {TrustDomain: "a.test", X509Authorities: [][]byte{a1.cert.Raw}, RefreshHintSeconds: 1 << 62},
		"other domain":     {TrustDomain: "b.test", X509Authorities: [][]byte{a1.cert.Raw}},
	} {
		if _, err := BundleFromProto(p); !errors.Is(err, ErrInvalidBundle) {
			t.Errorf("%s: BundleFromProto = %v, want ErrInvalidBundle", name, err)
		}
	}
}
