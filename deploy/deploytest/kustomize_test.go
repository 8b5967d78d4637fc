package deploytest

import (
	"context"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/meshfed/meshfed/deploy/crds"
	"github.com/meshfed/meshfed/testenv/kind"
)

// kustomizeDirs are the directories under deploy/kustomize a user applies.
var kustomizeDirs = []string{"crds", "hub", "agent", "gateway", "quickstart"}

func renderKustomize(t *testing.T, dir string) install {
	t.Helper()
	objs, err := kind.Render(context.Background(), filepath.Join(repoRoot, "deploy", "kustomize", dir))
	if err != nil {
		t.Fatal(err)
	}
	return install{name: "kustomize/" + dir, objs: objs}
}

// TestKustomizeCRDsAreTheEmbeddedCRDs: deploy/kustomize/crds installs
// exactly the CRD files that deploy/crds embeds and testenv applies (the
// kustomization there lists them by name).
func TestKustomizeCRDsAreTheEmbeddedCRDs(t *testing.T) {
	var rendered []string
	for _, o := range renderKustomize(t, "crds").objs {
		if o.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s %s in the CRDs", o.GetKind(), o.GetName())
		}
		rendered = append(rendered, o.GetName())
	}
	files, err := fs.Glob(crds.FS, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := kind.ReadManifests(filepath.Join(repoRoot, "deploy", "crds"))
	if err != nil {
		t.Fatal(err)
	}
	var embedded []string
	for _, o := range onDisk {
		embedded = append(embedded, o.GetName())
	}
	slices.Sort(rendered)
	slices.Sort(embedded)
	if len(files) != len(onDisk) || !slices.Equal(rendered, embedded) {
		t.Errorf("kustomize/crds renders %v; deploy/crds has %v (%d files embedded)", rendered, embedded, len(files))
	}
}

// TestKustomizeInstallsAreSafeAndConsistent checks every kustomize
// directory with workloads: pods run as the image's non-root user with
// requests, memory limits and GOMEMLIMIT, probes on the real health ports,
// container ports that flags bind, Services that reach their pods, and
// NetworkPolicies that select every pod and leave its ports open.
func TestKustomizeInstallsAreSafeAndConsistent(t *testing.T) {
	for _, dir := range kustomizeDirs[1:] {
		t.Run(dir, func(t *testing.T) {
			in := renderKustomize(t, dir)
			checkPods(t, in)
			checkServices(t, in)
			checkNetworkPolicies(t, in)
		})
	}
}

// TestKustomizeHubIsAQuorumThatOtherClustersReach: 3 servers, a PDB of 2,
// anti-affinity, a LoadBalancer for gRPC, memory from measured RSS.
func TestKustomizeHubIsAQuorumThatOtherClustersReach(t *testing.T) {
	for _, dir := range []string{"hub", "quickstart"} {
		checkHub(t, renderKustomize(t, dir))
	}
}

// TestKustomizeGatewayHasAUDPLoadBalancerAndTokenReviewIdentity.
func TestKustomizeGatewayHasAUDPLoadBalancerAndTokenReviewIdentity(t *testing.T) {
	for _, dir := range []string{"gateway", "quickstart"} {
		checkGateway(t, renderKustomize(t, dir))
	}
}

// TestKustomizeAgentRBACIsExactlyWhatTheAgentCalls.
func TestKustomizeAgentRBACIsExactlyWhatTheAgentCalls(t *testing.T) {
	for _, dir := range []string{"agent", "quickstart"} {
		checkAgentRBAC(t, renderKustomize(t, dir))
	}
}

// TestKustomizeQuickstartIsEveryPartInOneNamespace: the quickstart has the
// CRDs, the hub, the agent (joining) and the gateway, everything
// namespaced in meshfed-system, with the namespace.
func TestKustomizeQuickstartIsEveryPartInOneNamespace(t *testing.T) {
	in := renderKustomize(t, "quickstart")
	for _, want := range [][2]string{{"Namespace", "meshfed-system"}, {"StatefulSet", "meshfed-hub"},
		{"Deployment", "meshfed-agent"}, {"Deployment", "meshfed-gateway"},
		{"CustomResourceDefinition", "serviceexports.multicluster.x-k8s.io"}} {
		if in.find(want[0], want[1]) == nil {
			t.Errorf("no %s %s", want[0], want[1])
		}
	}
	for _, o := range in.objs {
		switch o.GetKind() {
		case "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding":
		default:
			if o.GetNamespace() != "meshfed-system" {
				t.Errorf("%s %s in namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
			}
		}
	}
	d := convert[appsv1.Deployment](t, in.find("Deployment", "meshfed-agent"))
	if args := d.Spec.Template.Spec.Containers[0].Args; len(args) < 2 || args[0] != "join" || args[1] != "$(TOKEN)" {
		t.Errorf("quickstart agent args %v: want the first start, meshfed join $(TOKEN)", args)
	}
}
