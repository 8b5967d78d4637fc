package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/testenv/wan"
)

func TestOptionsValidate(t *testing.T) {
	ok := Cluster{Name: "east", Region: "us-east", Zone: "us-east-1a"}
	if err := (Options{HubServers: 3, Clusters: []Cluster{ok}}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Options{HubServers: 1}).Validate(); err != nil {
		t.Fatalf("a hub alone: %v", err)
	}
	for name, tc := range map[string]struct {
		opts  Options
		field string
	}{
		"nothing":      {Options{}, "Clusters"},
		"hub size":     {Options{HubServers: 9, Clusters: []Cluster{ok}}, "HubServers"},
		"negative hub": {Options{HubServers: -1, Clusters: []Cluster{ok}}, "HubServers"},
		"bad name":     {Options{Clusters: []Cluster{{Name: "East_1", Region: "r", Zone: "z"}}}, "Clusters[0].Name"},
		"same name":    {Options{Clusters: []Cluster{ok, ok}}, "Clusters[1].Name"},
		"no region":    {Options{Clusters: []Cluster{{Name: "east", Zone: "z"}}}, "Clusters[0]"},
		"backend":      {Options{Clusters: []Cluster{ok}, Backend: "vm"}, "Backend"},
		"timeout":      {Options{Clusters: []Cluster{ok}, ReadyTimeout: -time.Second}, "ReadyTimeout"},
	} {
		err := tc.opts.Validate()
		if err == nil || !strings.Contains(err.Error(), "testenv: "+tc.field) {
			t.Errorf("%s: %v; want an error on %s", name, err, tc.field)
		}
	}
	err := (Options{Clusters: []Cluster{{Name: "x!", Region: "r", Zone: "z"}}}).Validate()
	if !errors.Is(err, federation.ErrInvalid) {
		t.Errorf("a bad cluster name does not wrap federation.ErrInvalid: %v", err)
	}
}

// Link(a, b) and Link(b, a) are two views of one link.
func TestFederationLinkViews(t *testing.T) {
	f := &Federation{links: map[[2]string]*wan.Link{{"east", "west"}: wan.NewLinkStream(1, 0, "east", "west")}}
	defer func() { _ = f.Close() }()
	ew, we := f.Link("east", "west"), f.Link("west", "east")
	if ew.String() != "east->west" || we.String() != "west->east" {
		t.Fatalf("views %s, %s", ew, we)
	}
	ew.SetOneWay(wan.Latency(10 * time.Millisecond))
	we.SetOneWay(wan.Latency(20 * time.Millisecond))
	fwd, rev := ew.Shapes()
	if fwd.Latency != 10*time.Millisecond || rev.Latency != 20*time.Millisecond {
		t.Fatalf("east->west %v, west->east %v", fwd.Latency, rev.Latency)
	}
	we.PartitionOneWay()
	if fwd, rev := ew.Partitioned(); fwd || !rev {
		t.Fatal("west->east one-way partition cut the wrong direction")
	}
	for _, pair := range [][2]string{{"east", "east"}, {"east", "north"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Link(%q, %q) did not panic", pair[0], pair[1])
				}
			}()
			f.Link(pair[0], pair[1])
		}()
	}
}

// TestFaults starts one cluster and a 3-server hub and injects faults into
// the real processes.
func TestFaults(t *testing.T) {
	requireBinaries(t)
	fed := Start(t, Options{HubServers: 3, Clusters: []Cluster{{Name: "east", Region: "us-east", Zone: "us-east-1a"}}})
	ctx := context.Background()
	east := fed.Cluster("east")
	cs := east.Clientset()
	cp := east.ControlPlane()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	getSurvivor := func(ctx context.Context) error {
		_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
		return err
	}

	// The kubeconfig file works on its own.
	kc, err := clientcmd.BuildConfigFromFlags("", east.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(kc).CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{}); err != nil {
		t.Fatalf("through the kubeconfig: %v", err)
	}

	// A paused API server answers nothing; resumed, it answers.
	if err := cp.APIServer().Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = getSurvivor(short)
	cancel()
	if err == nil {
		t.Fatal("a paused API server answered")
	}
	if err := cp.APIServer().Resume(); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 30*time.Second, getSurvivor); err != nil {
		t.Fatalf("after resume: %v", err)
	}

	// etcd killed: the API server fails; etcd restarted: the data is there.
	if err := cp.Etcd().Kill(); err != nil {
		t.Fatal(err)
	}
	err = WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: "default"}}, metav1.CreateOptions{})
		if err == nil {
			return errors.New("a write succeeded without etcd")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Etcd().Start(); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 30*time.Second, getSurvivor); err != nil {
		t.Fatalf("after the etcd restart: %v", err)
	}

	// A restarted API server keeps its address and is ready at once.
	if err := cp.APIServer().Restart(); err != nil {
		t.Fatal(err)
	}
	if err := getSurvivor(ctx); err != nil {
		t.Fatalf("after the API server restart: %v", err)
	}

	// The hub answers its operator; a killed server comes back.
	h := fed.Hub()
	out, err := h.Command(ctx, "token", "create", "--cluster", "east", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(out, &tok); err != nil || !strings.HasPrefix(tok.Token, federation.JoinTokenPrefix) {
		t.Fatalf("token create: %v: %s", err, out)
	}
	if err := h.Server(0).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := h.Server(1).Pause(); err != nil {
		t.Fatal(err)
	}
	if err := h.Server(1).Resume(); err != nil {
		t.Fatal(err)
	}
	if err := h.Server(0).Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Command(ctx, "token", "list", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	for _, p := range fed.Processes() {
		if !p.Running() {
			t.Errorf("%s is not running", p.Name())
		}
	}
}

// TestKindBackend stands up two kind clusters. It needs Docker and the kind
// node image; run it with MESHFED_TESTENV_BACKEND=kind (docs/testing.md).
func TestKindBackend(t *testing.T) {
	if Backend(os.Getenv(EnvBackend)) != BackendKind {
		t.Skip("kind backend needs Docker with images; this machine has none (set " + EnvBackend + "=kind to run it)")
	}
	fed := Start(t, Options{Clusters: []Cluster{
		{Name: "east", Region: "us-east", Zone: "us-east-1a"},
		{Name: "west", Region: "us-west", Zone: "us-west-1a"},
	}})
	for _, c := range fed.Clusters() {
		nodes, err := c.Clientset().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			if n.Labels["topology.kubernetes.io/region"] != c.Spec().Region {
				t.Errorf("%s: node %s has region %q", c.Name(), n.Name, n.Labels["topology.kubernetes.io/region"])
			}
		}
	}
}
