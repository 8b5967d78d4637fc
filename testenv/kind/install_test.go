package kind

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// TestNotConnected reads the JSON `meshfed clusters list -o json` prints
// (protojson with proto field names).
func TestNotConnected(t *testing.T) {
	resp := &fedv1.ListClustersResponse{Clusters: []*fedv1.ClusterRecord{
		{Name: "east", Status: "connected"},
		{Name: "west", Status: "disconnected"},
	}}
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NotConnected(out, []string{"west", "east", "north"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"north (not a member)", "west (disconnected)"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, err := NotConnected(out, []string{"east"}); err != nil || len(got) != 0 {
		t.Errorf("east alone: %q, %v", got, err)
	}
	if _, err := NotConnected([]byte("NAME STATUS\n"), nil); err == nil {
		t.Error("a table instead of JSON: no error")
	}
}

func TestHubCommandArgs(t *testing.T) {
	got := HubCommandArgs("token", "create", "--cluster", "west", "-o", "json")
	want := []string{"-n", "meshfed-system", "exec", "meshfed-hub-0", "-c", "hub", "--",
		"/meshfed", "token", "create", "--cluster", "west", "-o", "json", "--config", "/var/lib/meshfed/admin.yaml"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kubectl %q\nwant %q", got, want)
	}
}

func TestSecretObject(t *testing.T) {
	s := SecretObject(JoinTokenSecret, JoinTokenKey, "mfjoin1.x")
	if s.GetKind() != "Secret" || s.GetAPIVersion() != "v1" || s.GetNamespace() != Namespace || s.GetName() != JoinTokenSecret {
		t.Errorf("got %v", s.Object)
	}
	if v, _, _ := unstructured.NestedString(s.Object, "stringData", JoinTokenKey); v != "mfjoin1.x" {
		t.Errorf("stringData: %v", s.Object["stringData"])
	}
	n := NamespaceObject()
	if n.GetKind() != "Namespace" || n.GetName() != Namespace {
		t.Errorf("got %v", n.Object)
	}
	for _, o := range []*unstructured.Unstructured{s, n} {
		for _, f := range [][]string{{"status"}, {"metadata", "creationTimestamp"}} {
			if _, found, _ := unstructured.NestedFieldNoCopy(o.Object, f...); found {
				t.Errorf("%s: %v is set; an apply must not carry it", o.GetKind(), f)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestRolloutDone(t *testing.T) {
	d := func(mut func(*appsv1.Deployment)) *appsv1.Deployment {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Spec: appsv1.DeploymentSpec{Replicas: ptr[int32](1)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}}
		mut(d)
		return d
	}
	for name, tc := range map[string]struct {
		d    *appsv1.Deployment
		want string
	}{
		"done":         {d(func(*appsv1.Deployment) {}), ""},
		"not observed": {d(func(d *appsv1.Deployment) { d.Status.ObservedGeneration = 1 }), "generation 2"},
		"old pod left": {d(func(d *appsv1.Deployment) { d.Status.Replicas = 2 }), "1 old replicas"},
		"not updated":  {d(func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 0 }), "0 of 1 replicas updated"},
		"unavailable":  {d(func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 0 }), "0 of 1 replicas available"},
	} {
		err := deploymentDone(tc.d)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("deployment %s: err = %v, want %q", name, err, tc.want)
		}
	}
	s := func(mut func(*appsv1.StatefulSet)) *appsv1.StatefulSet {
		s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Generation: 1}, Spec: appsv1.StatefulSetSpec{Replicas: ptr[int32](3)},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, ReadyReplicas: 3, CurrentRevision: "r1", UpdateRevision: "r1"}}
		mut(s)
		return s
	}
	for name, tc := range map[string]struct {
		s    *appsv1.StatefulSet
		want string
	}{
		"done":        {s(func(*appsv1.StatefulSet) {}), ""},
		"not ready":   {s(func(s *appsv1.StatefulSet) { s.Status.ReadyReplicas = 2 }), "2 of 3 replicas ready"},
		"rolling out": {s(func(s *appsv1.StatefulSet) { s.Status.UpdateRevision = "r2" }), "revision r2"},
	} {
		err := statefulSetDone(tc.s)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("statefulset %s: err = %v, want %q", name, err, tc.want)
		}
	}
}

// TestWaitDeploymentNamesTheProblem: a rollout that does not finish times
// out with an error that says why its pods do not run.
func TestWaitDeploymentNamesTheProblem(t *testing.T) {
	sel := map[string]string{"app.kubernetes.io/name": "meshfed-agent"}
	cs := fake.NewClientset(
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: AgentDeployment},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr[int32](1), Selector: &metav1.LabelSelector{MatchLabels: sel}},
			Status:     appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "meshfed-agent-abc", Labels: sel},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
				Name:                 AgentContainer,
				RestartCount:         3,
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Message: "agent: invalid config"}},
			}}},
		},
	)
	err := WaitDeployment(context.Background(), cs, Namespace, AgentDeployment, 200*time.Millisecond)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"deployment meshfed-system/meshfed-agent", "0 of 1 replicas available",
		"pod meshfed-agent-abc: agent: CrashLoopBackOff", "restarts 3, last exit 2: agent: invalid config", "context deadline exceeded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
}

func TestWaitNodes(t *testing.T) {
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}
	n := node("meshfed-east-worker", "172.18.0.3", "10.10.1.0/24", false)
	n.Status.Conditions = []corev1.NodeCondition{ready}
	noRange := node("meshfed-east-control-plane", "172.18.0.2", "", true)
	noRange.Status.Conditions = []corev1.NodeCondition{ready}
	cs := fake.NewClientset(&n, &noRange)
	_, err := WaitNodes(context.Background(), cs, 2, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "node meshfed-east-control-plane: no pod range yet") {
		t.Errorf("err = %v, want one naming the node without a pod range", err)
	}
	got, err := WaitNodes(context.Background(), fake.NewClientset(&n), 1, time.Second)
	if err != nil || len(got) != 1 {
		t.Errorf("got %d nodes, %v", len(got), err)
	}
}
