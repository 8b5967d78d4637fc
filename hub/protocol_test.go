package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
)

// A rolling upgrade in which RotateCA is the new command (protocol version
// 2): while one server still gossips version 1, the leader refuses to
// propose RotateCA, whichever server is asked, and names the server to
// upgrade; older commands go on working. Once that server returns at
// version 2, RotateCA is proposed and applied.
func TestNewCommandWaitsForEveryServerToSupportIt(t *testing.T) {
	h := buildTestHub(t, 3, func(i int, c *Config) {
		c.protocol = protocolOverride{advertise: 2, require: map[fsm.MessageType]int{fsm.RotateCAType: 2}}
		if i == 2 {
			c.protocol.advertise = 1 // not upgraded yet
		}
	})
	for i := range h.cfgs {
		h.Start(i)
	}
	h.WaitReady(30 * time.Second)
	ctx := ctxT(t, 60*time.Second)
	joinCluster(t, h.Admin(), "east")
	for i := range 3 {
		_, err := h.Admin(i).RotateCA(ctx, &fedv1.RotateCARequest{Cluster: "east"})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "server s2 applies version 1") {
			t.Fatalf("RotateCA through s%d with s2 at protocol 1: %v; want FailedPrecondition naming s2", i, err)
		}
	}
	if _, err := h.Admin().CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "west"}); err != nil {
		t.Fatalf("a version-1 command during the upgrade: %v", err)
	}

	h.Kill(2)
	h.cfgs[2].protocol.advertise = 2
	h.Start(2)
	h.WaitReady(30 * time.Second)
	waitFor(t, 30*time.Second, "RotateCA once s2 gossips version 2", func() error {
		resp, err := h.Admin().RotateCA(ctx, &fedv1.RotateCARequest{Cluster: "east"})
		if err != nil {
			return err
		}
		if resp.GetCaRotation() != 1 {
			return fmt.Errorf("ca_rotation %d, want 1", resp.GetCaRotation())
		}
		return nil
	})
}
