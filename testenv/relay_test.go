package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testenv/wan"
)

// The traffic driver and echo servers work through a WAN link's TCP relay,
// as a test routes cluster-to-cluster traffic today.
func TestRelayCarriesDriverTraffic(t *testing.T) {
	echo, err := StartTCPEcho(Instance{Cluster: "west", Zone: "us-west-1a", Name: "tcp-0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = echo.Close() }()
	l := wan.NewLink(1)
	defer func() { _ = l.Close() }()
	l.Set(wan.Latency(time.Millisecond))
	addr, err := l.Relay("tcp", echo.Addr())
	if err != nil {
		t.Fatal(err)
	}
	res := DriveTCP(context.Background(), addr, Requests(20), Concurrency(4))
	if len(res.Failed()) != 0 || res.ByCluster()["west"] != 20 {
		t.Fatalf("through the TCP relay: %v; first failure %v", res, res.Failed())
	}
	if fwd, _ := l.Stats(); fwd.Conns == 0 {
		t.Fatal("the driver's connections did not go through the link")
	}
}
