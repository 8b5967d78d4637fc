package gatewayclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// gatewaySVIDTTL is the agent's default gateway SVID lifetime
// (agent.DefaultGatewaySVIDTTL; this package does not link the agent).
const gatewaySVIDTTL = 36 * time.Hour

// TestSVIDOutlivesAnAgentOutageOfTwelveHours drives the renewal loop
// through fake time: the agent dies just before the SVID's half-life
// renewal, stays down 12 hours (and then some), and the SVID verifies as
// the gateway's at every hour of it; when the agent returns, a fresh SVID
// follows within seconds. Then ten lifetimes of renewals at half-life.
func TestSVIDOutlivesAnAgentOutageOfTwelveHours(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		td := spiffeid.RequireTrustDomainFromString("east.meshfed.local")
		rc := trust.DefaultRootConfig()
		rc.TrustDomain = td
		rc.MaxSVIDTTL = gatewaySVIDTTL
		root, err := trust.NewRootAuthority(rc, &memStore{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = root.Close() }()
		cc := trust.DefaultCAConfig()
		cc.SVIDTTL = gatewaySVIDTTL
		ca, err := trust.NewCA(root, cc)
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := root.Bundle()
		if err != nil {
			t.Fatal(err)
		}
		doc, err := EncodeBootstrap("east", testToken, bundle)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{Agent: "127.0.0.1:1", Bootstrap: doc, Instance: "gw-0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		var down atomic.Bool
		var signed atomic.Int32
		var mu sync.Mutex
		c.sign = func(_ context.Context, req *gatewayv1.SignSVIDRequest) (*gatewayv1.SignSVIDResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			if down.Load() {
				return nil, status.Error(codes.Unavailable, "connection refused") // the agent is down
			}
			chain, err := ca.SignCSR(req.GetCsr(), trust.GatewayID(td))
			if err != nil {
				return nil, err
			}
			resp := &gatewayv1.SignSVIDResponse{Bundle: trust.BundleToProto(bundle)}
			for _, x := range chain {
				resp.CertChain = append(resp.CertChain, x.Raw)
			}
			signed.Add(1)
			return resp, nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := c.renewUntilDone(ctx, true); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.renewLoop(ctx) }()

		valid := func() error {
			s, err := c.GetX509SVID()
			if err != nil {
				return err
			}
			_, err = trust.VerifyPeer(s.Certificates, c.Bundles(), trust.AuthorizeID(trust.GatewayID(td)), time.Now())
			return err
		}
		// The agent dies a minute before the half-life renewal.
		time.Sleep(gatewaySVIDTTL/2 - time.Minute)
		down.Store(true)
		before := signed.Load()
		for h := range 13 {
			if err := valid(); err != nil {
				t.Fatalf("%d h into the agent outage the SVID no longer verifies: %v", h, err)
			}
			time.Sleep(time.Hour)
		}
		if signed.Load() != before {
			t.Fatal("signed while the agent was down")
		}
		// Back: renewed within the backoff (at most ReconnectMax).
		down.Store(false)
		time.Sleep(10 * time.Second)
		if signed.Load() == before {
			t.Fatal("no renewal within 10 s of the agent's return")
		}
		s, _ := c.GetX509SVID()
		if left := time.Until(s.Certificates[0].NotAfter); left < gatewaySVIDTTL-time.Minute {
			t.Fatalf("after the return the SVID has %v left", left)
		}
		// Ten more lifetimes: a renewal every half-life, never expired.
		before = signed.Load()
		for range 20 {
			time.Sleep(gatewaySVIDTTL / 2)
			if err := valid(); err != nil {
				t.Fatal(err)
			}
		}
		if n := signed.Load() - before; n < 19 || n > 21 {
			t.Fatalf("%d renewals over 10 lifetimes, want 20", n)
		}
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	})
}
