package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAgentsDeployExportDrive runs two clusters with their agents (real
// `meshfed` processes) and a hub: a workload deployed and exported in west
// is imported in east, drives locally, and the agents survive a hub-link
// partition and a restart.
func TestAgentsDeployExportDrive(t *testing.T) {
	requireBinaries(t)
	fed := Start(t, Options{HubServers: 1, Clusters: []Cluster{
		{Name: "east", Region: "us-east", Zone: "us-east-1a"},
		{Name: "west", Region: "us-west", Zone: "us-west-1a"},
	}})
	ctx := context.Background()
	east, west := fed.Cluster("east"), fed.Cluster("west")
	if east.Agent() == nil || west.Agent() == nil {
		t.Fatal("a cluster has no agent")
	}
	w := west.Deploy(EchoHTTP("default/reviews", 2).WithLabels(map[string]string{"version": "v1"}))
	west.Export("default/reviews")

	// The import in east: a ServiceImport and the derived slice at the
	// gateway address, on an egress port from east's range.
	var targets []string
	if err := WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		if _, err := east.mcs.MulticlusterV1beta1().ServiceImports("default").Get(ctx, "reviews", metav1.GetOptions{}); err != nil {
			return err
		}
		var err error
		targets, err = east.Targets(ctx, "default/reviews")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lo, hi := east.Agent().EgressPorts()
	if len(targets) != 1 || !strings.HasPrefix(targets[0], east.GatewayIP()+":") {
		t.Fatalf("east's targets %v, want the gateway address with one egress port in %d-%d", targets, lo, hi)
	}
	st, err := east.Agent().State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Imports) != 1 || st.Imports[0].Key != "default/reviews" || st.Imports[0].Clusters[0].Ready != 2 {
		t.Fatalf("east's imports %+v, want default/reviews with 2 ready in west", st.Imports)
	}
	if e := st.Imports[0].Egress["http"]; e < lo || e > hi {
		t.Errorf("egress port %d outside %d-%d", e, lo, hi)
	}

	// In west the service resolves to its own endpoints.
	res := west.Drive("default/reviews", Requests(100))
	if res.Succeeded() != 100 || len(res.ByInstance()) != 2 {
		t.Fatalf("west drive: %v, by instance %v", res, res.ByInstance())
	}

	// Health reaches the other cluster: one endpoint not ready.
	if err := w.SetReady(0, false); err != nil {
		t.Fatal(err)
	}
	waitImportReady(t, east, "default/reviews", 1)

	// East cut off the hub: its agent says so, and keeps its import.
	fed.HubLink("east").Partition()
	waitAgent(t, east, func(st *AgentState) error {
		if st.Hub.Connected {
			return errors.New("still connected")
		}
		if len(st.Imports) != 1 {
			return fmt.Errorf("%d imports while partitioned", len(st.Imports))
		}
		return nil
	})
	fed.HubLink("east").Heal()
	waitAgent(t, east, func(st *AgentState) error {
		if !st.Hub.Connected {
			return errors.New("not connected")
		}
		return nil
	})

	// A restarted agent runs `meshfed agent` from its stored credentials.
	if err := east.Agent().Restart(); err != nil {
		t.Fatal(err)
	}
	if args := east.Agent().Args(); args[0] != "agent" {
		t.Errorf("restart args %v, want `agent ...`", args)
	}
	waitAgent(t, east, func(st *AgentState) error {
		if !st.Hub.Connected || len(st.Imports) != 1 {
			return fmt.Errorf("connected %v, %d imports", st.Hub.Connected, len(st.Imports))
		}
		return nil
	})

	// An unexport removes the import everywhere.
	west.Unexport("default/reviews")
	waitAgent(t, east, func(st *AgentState) error {
		if len(st.Imports) != 0 {
			return fmt.Errorf("%d imports after the unexport", len(st.Imports))
		}
		return nil
	})
}

// waitAgent polls the agent's state for up to 40 s: an agent notices a
// silent hub within 15 s (gRPC keepalive).
func waitAgent(t *testing.T, c *ClusterEnv, cond func(*AgentState) error) {
	t.Helper()
	if err := WaitFor(context.Background(), 40*time.Second, func(ctx context.Context) error {
		st, err := c.Agent().State(ctx)
		if err != nil {
			return err
		}
		return cond(st)
	}); err != nil {
		t.Fatalf("agent of %s: %v", c.Name(), err)
	}
}

func waitImportReady(t *testing.T, c *ClusterEnv, key string, ready uint32) {
	t.Helper()
	waitAgent(t, c, func(st *AgentState) error {
		for _, im := range st.Imports {
			if im.Key == key && len(im.Clusters) == 1 && im.Clusters[0].Ready == ready {
				return nil
			}
		}
		return fmt.Errorf("no import %s with %d ready: %+v", key, ready, st.Imports)
	})
}
