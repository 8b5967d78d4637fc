package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// pipeHandshake runs a full TLS handshake over net.Pipe (usable inside a
// synctest bubble) and returns the client connection and both errors.
func pipeHandshake(server, client *tls.Config) (*tls.Conn, *tls.Conn, error, error) {
	sc, cc := net.Pipe()
	s, c := tls.Server(sc, server), tls.Client(cc, client)
	done := make(chan error, 1)
	go func() {
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		} else {
			_ = sc.Close()
		}
		done <- err
	}()
	clientErr := c.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(c, make([]byte, 1))
	}
	if clientErr != nil {
		_ = cc.Close()
	}
	return s, c, <-done, clientErr
}

// TestRotationUnderLoad rotates one cluster's root while its gateway and a
// federated cluster's gateway keep handshaking both ways once a minute and
// keep one long-lived connection open. Bundles reach the other side only
// after a full refresh interval (the worst case of a hub that delivers
// within one refresh). No handshake may fail and the long-lived
// connection's peer must stay verifiable for as long as its certificate
// is valid.
func TestRotationUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		newCluster := func(name string) (*CA, *RootAuthority, *SVIDSource) {
			a, err := NewRootAuthority(testRootConfig(t, name, nil), newMemStore(t))
			if err != nil {
				t.Fatal(err)
			}
			ca, err := NewCA(a, DefaultCAConfig())
			if err != nil {
				t.Fatal(err)
			}
			gw, err := NewSVIDSource(ca, GatewayID(ca.TrustDomain()), DefaultSVIDSourceConfig())
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = gw.Run(ctx) }()
			return ca, a, gw
		}
		westCA, westRoot, westGW := newCluster("west.test")
		eastCA, eastRoot, eastGW := newCluster("east.test")
		defer func() { _ = westRoot.Close() }()
		defer func() { _ = eastRoot.Close() }()

		// Each side's view of the federation, fed by a slow "hub".
		westSet, eastSet := NewBundleSet(), NewBundleSet()
		for _, ca := range []*CA{westCA, eastCA} {
			b, err := ca.Bundle()
			if err != nil {
				t.Fatal(err)
			}
			for _, set := range []*BundleSet{westSet, eastSet} {
				if err := set.Set(b); err != nil {
					t.Fatal(err)
				}
			}
		}
		hub := func(ca *CA) {
			ch, stop := ca.Watch()
			defer stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
				}
				time.Sleep(DefaultRefreshHint) // worst-case propagation
				b, err := ca.Bundle()
				if err != nil {
					t.Error(err)
					return
				}
				for _, set := range []*BundleSet{westSet, eastSet} {
					if err := set.Set(b); err != nil {
						t.Error(err)
					}
				}
			}
		}
		go hub(westCA)
		go hub(eastCA)

		westServer := ServerTLS(westGW, westSet, AuthorizeKind(KindGateway))
		eastServer := ServerTLS(eastGW, eastSet, AuthorizeKind(KindGateway))
		eastToWest := ClientTLS(eastGW, eastSet, AuthorizeID(GatewayID(westCA.TrustDomain())))
		westToEast := ClientTLS(westGW, westSet, AuthorizeID(GatewayID(eastCA.TrustDomain())))

		// The long-lived connection, east → west.
		longS, longC, serr, cerr := pipeHandshake(westServer, eastToWest)
		if serr != nil || cerr != nil {
			t.Fatalf("long-lived connection: %v / %v", serr, cerr)
		}
		defer func() { _ = longS.Close(); _ = longC.Close() }()
		longPeer := longS.ConnectionState().PeerCertificates

		cfg := testRootConfig(t, "west.test", nil)
		end := 10*time.Minute + cfg.PrepareDuration + cfg.MaxSVIDTTL + cfg.ClockSkew + 2*DefaultRefreshHint + 30*time.Minute
		start := time.Now()
		handshakes, rotated := 0, false
		var peers [][]*x509.Certificate
		for time.Since(start) < end {
			if !rotated && time.Since(start) >= 10*time.Minute {
				if _, err := westRoot.Rotate(); err != nil {
					t.Fatal(err)
				}
				rotated = true
			}
			for _, p := range []struct{ server, client *tls.Config }{{westServer, eastToWest}, {eastServer, westToEast}} {
				s, c, serr, cerr := pipeHandshake(p.server, p.client)
				handshakes++
				if serr != nil || cerr != nil {
					t.Fatalf("t+%v (%s): handshake failed: server %v; client %v", time.Since(start), westRoot.Status().Phase, serr, cerr)
				}
				peers = append(peers, s.ConnectionState().PeerCertificates, c.ConnectionState().PeerCertificates)
				_ = s.Close()
				_ = c.Close()
			}
			// Every peer seen so far must still verify against the current
			// bundles while its certificate is valid: no connection has to
			// be dropped because a root left too early.
			now := time.Now()
			for _, certs := range append(peers, longPeer) {
				if now.Before(certs[0].NotAfter) {
					set := westSet
					if certs[0].URIs[0].Host == "west.test" {
						set = eastSet
					}
					if _, err := VerifyPeer(certs, set, AuthorizeFederated(), now); err != nil {
						t.Fatalf("t+%v: a live peer no longer verifies: %v", time.Since(start), err)
					}
				}
			}
			// The long-lived connection keeps carrying data.
			go func() { _, _ = longC.Write([]byte("ping")) }()
			if _, err := io.ReadFull(longS, make([]byte, 4)); err != nil {
				t.Fatalf("t+%v: long-lived connection: %v", time.Since(start), err)
			}
			time.Sleep(time.Minute)
		}
		st := westRoot.Status()
		if st.Phase != PhaseStable || st.Sequence != 3 || len(st.Published) != 1 {
			t.Errorf("rotation did not finish: %+v", st)
		}
		if got, _ := westSet.Get(westCA.TrustDomain()); len(got.X509Authorities()) != 1 {
			t.Errorf("the federation still holds %d west roots", len(got.X509Authorities()))
		}
		if peer := westGW.current().Certificates[0]; peer.CheckSignatureFrom(st.Issuing) != nil {
			t.Error("west's gateway SVID is not from the new root")
		}
		t.Logf("%d handshakes over %v of rotation, none failed", handshakes, end)
		cancel()
	})
}
