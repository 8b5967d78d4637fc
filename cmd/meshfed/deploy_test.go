package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/testenv/kind"
)

// TestGatewayKustomizationRunsAValidGateway: deploy/kustomize/gateway
// renders a Deployment whose arguments meshfed gateway accepts, reading
// the bootstrap document from the Secret the agent writes (key "data")
// and a projected token of the ServiceAccount the agent's TokenReview
// expects; the agent's ClusterRole may create TokenReviews.
func TestGatewayKustomizationRunsAValidGateway(t *testing.T) {
	objs, err := kind.Render(context.Background(), filepath.Join("..", "..", "deploy", "kustomize", "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	var dep *unstructured.Unstructured
	var sa bool
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			dep = o
		case "ServiceAccount":
			sa = sa || o.GetName() == "meshfed-gateway"
		}
	}
	if dep == nil || !sa {
		t.Fatalf("want a Deployment and the ServiceAccount meshfed-gateway; got %d objects", len(objs))
	}
	if n, _, _ := unstructured.NestedString(dep.Object, "spec", "template", "spec", "serviceAccountName"); n != "meshfed-gateway" {
		t.Errorf("serviceAccountName %q", n)
	}
	cs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	c := cs[0].(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, strings.ReplaceAll(a.(string), "$(POD_NAME)", "meshfed-gateway-0"))
	}
	if args[0] != "gateway" {
		t.Fatalf("args[0] = %q", args[0])
	}
	cmd := newGatewayCmd()
	if err := cmd.ParseFlags(args[1:]); err != nil {
		t.Fatalf("meshfed gateway refuses the Deployment's arguments: %v", err)
	}
	f := cmd.Flags()
	boot, _ := f.GetString("bootstrap")
	tok, _ := f.GetString("service-account-token")
	vols, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "volumes")
	var secret, projected bool
	for _, v := range vols {
		m := v.(map[string]any)
		if s, ok := m["secret"].(map[string]any); ok && s["secretName"] == "meshfed-gateway-bootstrap" {
			secret = true
		}
		if _, ok := m["projected"]; ok {
			projected = true
		}
	}
	if !secret || !strings.HasSuffix(boot, "/data") {
		t.Errorf("--bootstrap=%s: want the key \"data\" of the Secret meshfed-gateway-bootstrap mounted (mounted: %v)", boot, secret)
	}
	if !projected || tok == "" {
		t.Errorf("--service-account-token=%q: want a projected ServiceAccount token", tok)
	}

	agent, err := kind.Render(context.Background(), filepath.Join("..", "..", "deploy", "kustomize", "agent"))
	if err != nil {
		t.Fatal(err)
	}
	var review bool
	for _, o := range agent {
		if o.GetKind() != "ClusterRole" {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		for _, r := range rules {
			m := r.(map[string]any)
			res, _ := m["resources"].([]any)
			verbs, _ := m["verbs"].([]any)
			review = review || (slices.Contains(res, any("tokenreviews")) && slices.Contains(verbs, any("create")))
		}
	}
	if !review {
		t.Error("the agent's ClusterRole cannot create TokenReviews; in-cluster gateways could not authenticate")
	}
}

// TestAgentKustomizationServesClustersetDNSBehindAService: the agent binds
// its DNS server and the Service CoreDNS forwards to reaches it on 53, UDP
// and TCP.
func TestAgentKustomizationServesClustersetDNSBehindAService(t *testing.T) {
	objs, err := kind.Render(context.Background(), filepath.Join("..", "..", "deploy", "kustomize", "agent"))
	if err != nil {
		t.Fatal(err)
	}
	var bind bool
	var protos []string
	for _, o := range objs {
		switch {
		case o.GetKind() == "Deployment":
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
			bind = slices.Contains(args, "--dns-bind=0.0.0.0:5353")
		case o.GetKind() == "Service" && o.GetName() == "meshfed-agent-dns":
			ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
			for _, p := range ports {
				m := p.(map[string]any)
				if m["port"] == int64(53) {
					protos = append(protos, m["protocol"].(string))
				}
			}
		}
	}
	if !bind {
		t.Error("the agent's Deployment does not pass --dns-bind=0.0.0.0:5353")
	}
	slices.Sort(protos)
	if !slices.Equal(protos, []string{"TCP", "UDP"}) {
		t.Errorf("Service meshfed-agent-dns port 53 protocols %v, want TCP and UDP", protos)
	}
}

// The agent runs as two replicas electing a leader, updated without a gap,
// with the Lease allowed by RBAC and /metrics on the pod IP.
func TestAgentKustomizationRunsReplicasWithLeaderElection(t *testing.T) {
	objs, err := kind.Render(context.Background(), filepath.Join("..", "..", "deploy", "kustomize", "agent"))
	if err != nil {
		t.Fatal(err)
	}
	var deployment, leases bool
	for _, o := range objs {
		switch {
		case o.GetKind() == "Deployment":
			deployment = true
			replicas, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
			strategy, _, _ := unstructured.NestedString(o.Object, "spec", "strategy", "type")
			if replicas < 2 || strategy != "RollingUpdate" {
				t.Errorf("agent Deployment: %d replicas, strategy %q; want 2 and RollingUpdate", replicas, strategy)
			}
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
			for _, want := range []string{"--leader-elect", "--leader-election-id=$(POD_NAME)", "--metrics-bind=$(POD_IP):9480"} {
				if !slices.Contains(args, want) {
					t.Errorf("agent args %v lack %s", args, want)
				}
			}
		case o.GetKind() == "Role" && o.GetName() == "meshfed-agent":
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			for _, r := range rules {
				res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
				verbs, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "verbs")
				if slices.Contains(res, "leases") && slices.Contains(verbs, "update") && slices.Contains(verbs, "create") {
					leases = true
				}
			}
		}
	}
	if !deployment || !leases {
		t.Errorf("deployment rendered %v, Role allows leases %v", deployment, leases)
	}
}
