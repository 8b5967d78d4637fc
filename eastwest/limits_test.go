package eastwest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/meshfed/meshfed/gateway/gatewayclient"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// TestStreamFloodFromOneClusterSparesTheOthers: central opens far more
// streams than its per-cluster limit on east's gateway; past the limit
// east answers Overloaded, and west's requests through its own gateway to
// east keep succeeding throughout.
func TestStreamFloodFromOneClusterSparesTheOthers(t *testing.T) {
	east, west, central := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "west", "us-west", "us-west-1a"), newCluster(t, "central", "eu-central", "eu-central-1a")
	tcpEP := tcpEcho(t)
	webEP, _ := httpEcho(t, "east")
	tcpSP, webSP := port("tcp", 9090, "TCP"), port("http", 8080, "HTTP")
	const limit = 100
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{
		localService("default/echo", tcpSP, tcpEP), localService("default/web", webSP, webEP)}, remote{c: west}, remote{c: central}),
		func(c *Config) { c.MaxStreamsPerCluster = limit }, west, central)
	webPort := freePort(t)
	r := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{importOf("default/web", webSP, webPort, r)}, nil, r), nil, east)
	waitFor(t, 5*time.Second, func() error {
		if !westGW.g.clusterUp(east.name) {
			return fmt.Errorf("east not up in west's pool")
		}
		return nil
	})
	get := func() (time.Duration, error) {
		start := time.Now()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/x", webPort))
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	var quiet []time.Duration
	for range 200 {
		d, err := get()
		if err != nil {
			t.Fatal(err)
		}
		quiet = append(quiet, d)
	}

	// The flood: central's gateway identity, one connection, 3 × limit
	// streams to the TCP echo, held open.
	svid, err := central.ca.IssueX509SVID(trust.GatewayID(central.td))
	if err != nil {
		t.Fatal(err)
	}
	bs := trust.NewBundleSet()
	_ = bs.Set(central.bundle)
	_ = bs.Set(east.bundle)
	tc := trust.ClientTLS(staticSVID{svid}, bs, trust.AuthorizeID(trust.GatewayID(east.td)))
	tc.NextProtos = []string{gatewayv1.ALPN}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, eastGW.addr, tc, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = qc.CloseWithError(0, "") }()
	hdr, _ := AppendHeader(nil, &Header{Kind: KindConnect, Service: "default/echo", Port: 9090, Source: "central"})
	codes := map[Code]int{}
	var floodLat []time.Duration
	for i := range 3 * limit {
		s, err := qc.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(hdr); err != nil {
			t.Fatal(err)
		}
		st, err := ReadStatus(s)
		if err != nil {
			t.Fatal(err)
		}
		codes[st.Code]++
		if i%3 == 0 { // west keeps working during the flood
			d, err := get()
			if err != nil {
				t.Fatalf("west's request %d into the flood failed: %v", i/3, err)
			}
			floodLat = append(floodLat, d)
		}
	}
	if codes[CodeOK] != limit || codes[CodeOverloaded] != 2*limit {
		t.Fatalf("flood answers %v, want %d ok and %d overloaded", codes, limit, 2*limit)
	}
	slices.Sort(quiet)
	slices.Sort(floodLat)
	t.Logf("west's latency p50 %v quiet, %v during central's flood (%d streams held at the limit)", quiet[len(quiet)/2], floodLat[len(floodLat)/2], limit)
}
