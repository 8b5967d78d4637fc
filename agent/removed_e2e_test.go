package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/testenv"
)

// A cluster removed from the federation learns it: its agent stops,
// removes every import it made from the real API server, empties its
// cached hub state, marks its own ServiceExports ClusterRemoved, says why
// in /state, and Run returns ErrClusterRemoved.
func TestRemovedClusterAgentRemovesItsImportsAndSaysWhy(t *testing.T) {
	ew := startEastWest(t, 1)
	admin, east, west := ew.admin, ew.east, ew.west
	emc, wmc, ekc, wkc := ew.emc, ew.wmc, ew.ekc, ew.wkc
	ctx := context.Background()
	ecfg, wcfg := kubeConfig(t, east, t.TempDir()), kubeConfig(t, west, t.TempDir())
	if err := Join(ctx, ecfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	if err := Join(ctx, wcfg, createToken(t, admin, "west")); err != nil {
		t.Fatal(err)
	}
	startAgent(t, ecfg)
	wa, err := New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWest := context.WithCancel(ctx)
	defer stopWest()
	westDone := make(chan error, 1)
	go func() { westDone <- wa.Run(wctx) }()

	createExport(t, ekc, emc, "default", "reviews", 8080, corev1.ServiceTypeClusterIP, "us-east-1a")
	createExport(t, wkc, wmc, "default", "ratings", 9090, corev1.ServiceTypeClusterIP, "us-west-1a")
	if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		_, _, err := importObjects(ctx, wkc, wmc, "default", "reviews")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, wmc, "default", "ratings", ConditionSynced, metav1.ConditionTrue, ReasonPublished)

	if _, err := admin.RemoveCluster(ctx, &fedv1.RemoveClusterRequest{Name: "west"}); err != nil {
		t.Fatal(err)
	}
	var runErr error
	select {
	case runErr = <-westDone:
	case <-time.After(90 * time.Second):
		t.Fatal("west's agent still runs 90 s after its cluster was removed")
	}
	if !errors.Is(runErr, ErrClusterRemoved) {
		t.Fatalf("west's Run returned %v, want ErrClusterRemoved", runErr)
	}

	// Nothing the importer made is left.
	owned := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue}
	sis, err := wmc.MulticlusterV1beta1().ServiceImports("").List(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := wkc.CoreV1().Services("").List(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}
	sls, err := wkc.DiscoveryV1().EndpointSlices("").List(ctx, owned)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(sis.Items) + len(svcs.Items) + len(sls.Items); n != 0 {
		t.Errorf("after the removal: %d ServiceImports, %d Services, %d EndpointSlices of the agent's left, want none",
			len(sis.Items), len(svcs.Items), len(sls.Items))
	}
	// The cluster's own Service is untouched.
	if _, err := wkc.CoreV1().Services("default").Get(ctx, "ratings", metav1.GetOptions{}); err != nil {
		t.Errorf("the cluster's own Service: %v", err)
	}
	// Says why, on the ServiceExports and in /state.
	waitCondition(t, wmc, "default", "ratings", ConditionSynced, metav1.ConditionFalse, ReasonClusterRemoved)
	st := wa.State()
	if st.Hub.Connected || st.Hub.Removed == "" || len(st.Imports) != 0 {
		t.Errorf("state after removal: connected %v, removed %q, %d imports; want disconnected, the reason, none", st.Hub.Connected, st.Hub.Removed, len(st.Imports))
	}
	// A restart would serve nothing stale: the caches are gone.
	v, err := viewFile{path: filepath.Join(wcfg.DataDir, hubStateFile)}.load()
	if err != nil || v != nil {
		t.Errorf("cached hub state after removal: %v (err %v), want none", describeView(v), err)
	}
	cm, err := newConfigMapCache(wkc, wcfg.Namespace, time.Second, testLogger(t, "west")).load(ctx)
	if err != nil || cm != nil {
		t.Errorf("ConfigMap hub state after removal: %v (err %v), want none", describeView(cm), err)
	}
}

func describeView(v *view) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("revision %d, %d clusters, %d exports", v.revision, len(v.clusters), len(v.exports))
}
