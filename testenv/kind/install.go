package kind

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/wait"
)

// The names in deploy/ that the backend relies on. A test renders the
// kustomizations and checks them.
const (
	Namespace        = "meshfed-system"
	HubStatefulSet   = "meshfed-hub"
	HubPod           = "meshfed-hub-0" // the StatefulSet's first server
	HubContainer     = "hub"
	HubAdminConfig   = "/var/lib/meshfed/admin.yaml" // written at bootstrap into the data volume
	EncryptKeySecret = "meshfed-hub-encrypt"
	EncryptKeyKey    = "encrypt-key"
	AgentDeployment  = "meshfed-agent"
	AgentContainer   = "agent"
	AgentConfigMap   = "meshfed-agent"
	JoinTokenSecret  = "meshfed-join-token"
	JoinTokenKey     = "token"
	// CredentialsSecret is where the agent (kubernetes source) stores its
	// credentials once joined; agent/credentials.go names it.
	CredentialsSecret = "meshfed-agent-credentials"
)

// HubOverlay is the hub of deploy/kustomize/hub in the repository at root,
// with the image tag set.
func HubOverlay(root, tag string) Overlay {
	return Overlay{Base: filepath.Join(root, HubKustomize), ImageTag: tag}
}

// AgentValues are one cluster's values of the agent's ConfigMap.
type AgentValues struct {
	Cluster, Region, Zone string
	// GatewayAddress is the IP address imported services' EndpointSlices
	// point at: the cluster's east-west gateway.
	GatewayAddress string
}

// AgentOverlay is the agent of deploy/kustomize/agent in the repository at
// root for one cluster, with the image tag set; with join, it runs `meshfed
// join $(TOKEN)` (the component deploy/kustomize/agent/join), else `meshfed
// agent`.
func AgentOverlay(root, tag string, v AgentValues, join bool) Overlay {
	o := Overlay{
		Base:               filepath.Join(root, AgentKustomize),
		ImageTag:           tag,
		ConfigMap:          AgentConfigMap,
		ConfigMapNamespace: Namespace,
		Literals: map[string]string{
			"cluster":         v.Cluster,
			"region":          v.Region,
			"zone":            v.Zone,
			"gateway-address": v.GatewayAddress,
		},
	}
	if join {
		o.Components = []string{filepath.Join(root, JoinComponent)}
	}
	return o
}

// NamespaceObject is the meshfed-system Namespace, labelled as the
// kustomizations label it (so that applying it after them changes nothing).
func NamespaceObject() *unstructured.Unstructured {
	return mustUnstructured(&corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: Namespace, Labels: map[string]string{partOfLabel: "meshfed"}},
	})
}

// partOfLabel is set on everything by deploy/kustomize's kustomizations.
const partOfLabel = "app.kubernetes.io/part-of"

// SecretObject is an Opaque Secret in meshfed-system with one key.
func SecretObject(name, key, value string) *unstructured.Unstructured {
	return mustUnstructured(&corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{key: value},
	})
}

func mustUnstructured(o runtime.Object) *unstructured.Unstructured {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		panic(fmt.Sprintf("kind: converting a %T: %v", o, err)) // a typed object always converts
	}
	// Zero values the conversion keeps and an apply must not carry.
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(m, "status")
	return &unstructured.Unstructured{Object: m}
}

// GenerateEncryptKey runs `meshfed hub keygen` in the image.
func GenerateEncryptKey(ctx context.Context, image string) (string, error) {
	out, err := docker(ctx, "run", "--rm", image, "hub", "keygen")
	if err != nil {
		return "", err
	}
	key := strings.TrimSpace(string(out))
	if key == "" {
		return "", fmt.Errorf("kind: meshfed hub keygen in %s: empty output", image)
	}
	return key, nil
}

// Kubectl runs kubectl with kubeconfig and returns its standard output; a
// failure carries its standard error.
func Kubectl(ctx context.Context, kubeconfig string, args ...string) ([]byte, error) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return nil, fmt.Errorf("kind: kubectl is not on PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kind: kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// HubCommandArgs are the kubectl arguments that run the meshfed CLI as the
// hub's operator inside the first hub server, with the admin.yaml it wrote
// at bootstrap.
func HubCommandArgs(args ...string) []string {
	a := []string{"-n", Namespace, "exec", HubPod, "-c", HubContainer, "--", "/meshfed"}
	a = append(a, args...)
	return append(a, "--config", HubAdminConfig)
}

// HubCommand runs the meshfed CLI as the hub's operator (see
// [HubCommandArgs]) in the cluster of kubeconfig and returns its standard
// output.
func HubCommand(ctx context.Context, kubeconfig string, args ...string) ([]byte, error) {
	return Kubectl(ctx, kubeconfig, HubCommandArgs(args...)...)
}

// CreateToken creates a join token for cluster with `meshfed token create`
// in the hub, and returns it.
func CreateToken(ctx context.Context, hubKubeconfig, cluster string) (string, error) {
	out, err := HubCommand(ctx, hubKubeconfig, "token", "create", "--cluster", cluster, "-o", "json")
	if err != nil {
		return "", err
	}
	var resp fedv1.CreateTokenResponse
	if err := protojson.Unmarshal(out, &resp); err != nil {
		return "", fmt.Errorf("kind: meshfed token create --cluster %s: output: %w", cluster, err)
	}
	if resp.GetToken() == "" {
		return "", fmt.Errorf("kind: meshfed token create --cluster %s: output: token: empty", cluster)
	}
	return resp.GetToken(), nil
}

// NotConnected returns, sorted, the names of want that the hub's cluster
// list (the JSON of `meshfed clusters list -o json`) does not show as
// connected, each with its status.
func NotConnected(listJSON []byte, want []string) ([]string, error) {
	var resp fedv1.ListClustersResponse
	if err := protojson.Unmarshal(listJSON, &resp); err != nil {
		return nil, fmt.Errorf("kind: meshfed clusters list: output: %w", err)
	}
	status := map[string]string{}
	for _, c := range resp.GetClusters() {
		status[c.GetName()] = c.GetStatus()
	}
	var missing []string
	for _, n := range want {
		switch st, ok := status[n]; {
		case !ok:
			missing = append(missing, n+" (not a member)")
		case st != "connected":
			missing = append(missing, fmt.Sprintf("%s (%s)", n, st))
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// WaitConnected waits until the hub lists every cluster of want as
// connected.
func WaitConnected(ctx context.Context, hubKubeconfig string, want []string, timeout time.Duration) error {
	err := poll(ctx, timeout, func(ctx context.Context) error {
		out, err := HubCommand(ctx, hubKubeconfig, "clusters", "list", "-o", "json")
		if err != nil {
			return err
		}
		missing, err := NotConnected(out, want)
		if err != nil {
			return wait.Permanent(err)
		}
		if len(missing) > 0 {
			return fmt.Errorf("not connected: %s", strings.Join(missing, ", "))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kind: hub: clusters: %w", err)
	}
	return nil
}

// WaitNodes waits until the cluster has at least want nodes, each Ready
// and with a pod range, and returns them.
func WaitNodes(ctx context.Context, cs kubernetes.Interface, want int, timeout time.Duration) ([]corev1.Node, error) {
	var ready []corev1.Node
	err := poll(ctx, timeout, func(ctx context.Context) error {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(l.Items) < want {
			return fmt.Errorf("%d of %d nodes registered", len(l.Items), want)
		}
		for _, n := range l.Items {
			if !nodeReady(n) {
				return fmt.Errorf("node %s: not Ready", n.Name)
			}
			if n.Spec.PodCIDR == "" && len(n.Spec.PodCIDRs) == 0 {
				return fmt.Errorf("node %s: no pod range yet", n.Name)
			}
		}
		ready = l.Items
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kind: nodes: %w", err)
	}
	return ready, nil
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitStatefulSet waits until every replica of the StatefulSet is ready at
// its current revision. While waiting, the last error names the pods that
// are not running and why.
func WaitStatefulSet(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) error {
	err := poll(ctx, timeout, func(ctx context.Context) error {
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := statefulSetDone(s); err != nil {
			return fmt.Errorf("%w%s", err, podProblems(ctx, cs, ns, s.Spec.Selector))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kind: statefulset %s/%s: %w", ns, name, err)
	}
	return nil
}

func statefulSetDone(s *appsv1.StatefulSet) error {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	switch {
	case st.ObservedGeneration < s.Generation:
		return fmt.Errorf("generation %d not observed yet", s.Generation)
	case st.ReadyReplicas < want:
		return fmt.Errorf("%d of %d replicas ready", st.ReadyReplicas, want)
	case st.UpdateRevision != "" && st.CurrentRevision != st.UpdateRevision:
		return fmt.Errorf("rolling out revision %s", st.UpdateRevision)
	}
	return nil
}

// WaitDeployment waits until the Deployment's rollout is complete: every
// replica updated and available, none of an older revision left.
func WaitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) error {
	err := poll(ctx, timeout, func(ctx context.Context) error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := deploymentDone(d); err != nil {
			return fmt.Errorf("%w%s", err, podProblems(ctx, cs, ns, d.Spec.Selector))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kind: deployment %s/%s: %w", ns, name, err)
	}
	return nil
}

func deploymentDone(d *appsv1.Deployment) error {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return fmt.Errorf("generation %d not observed yet", d.Generation)
	case st.UpdatedReplicas < want:
		return fmt.Errorf("%d of %d replicas updated", st.UpdatedReplicas, want)
	case st.Replicas > st.UpdatedReplicas:
		return fmt.Errorf("%d old replicas left", st.Replicas-st.UpdatedReplicas)
	case st.AvailableReplicas < want:
		return fmt.Errorf("%d of %d replicas available", st.AvailableReplicas, want)
	}
	return nil
}

// podProblems describes, for an error message, the pods of selector whose
// containers are waiting or have restarted: "; pod p: c: CrashLoopBackOff
// (last exit 1: ...)". Empty when there are none or they cannot be listed.
func podProblems(ctx context.Context, cs kubernetes.Interface, ns string, sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return "" // an empty selector would list every pod
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodPending && len(p.Status.ContainerStatuses) == 0 {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
					fmt.Fprintf(&b, "; pod %s: not scheduled: %s", p.Name, c.Message)
				}
			}
		}
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil {
				fmt.Fprintf(&b, "; pod %s: %s: %s", p.Name, c.Name, w.Reason)
				if w.Message != "" {
					fmt.Fprintf(&b, ": %s", w.Message)
				}
			}
			if t := c.LastTerminationState.Terminated; t != nil {
				fmt.Fprintf(&b, " (restarts %d, last exit %d: %s)", c.RestartCount, t.ExitCode, strings.TrimSpace(t.Message))
			}
		}
	}
	return b.String()
}

// WaitSecret waits until the Secret exists.
func WaitSecret(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration, also func(ctx context.Context) string) error {
	err := poll(ctx, timeout, func(ctx context.Context) error {
		_, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil && also != nil {
			return fmt.Errorf("%w%s", err, also(ctx))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("kind: secret %s/%s: %w", ns, name, err)
	}
	return nil
}

// DeploymentPodProblems returns [podProblems] for the pods of a Deployment,
// for [WaitSecret]'s also.
func DeploymentPodProblems(cs kubernetes.Interface, ns, name string) func(ctx context.Context) string {
	return func(ctx context.Context) string {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "; " + err.Error()
		}
		return podProblems(ctx, cs, ns, d.Spec.Selector)
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
