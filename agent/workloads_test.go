package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/testenv"
)

func pod(name, uid, ip, sa string, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(uid)},
		Spec:   corev1.PodSpec{ServiceAccountName: sa},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func describe(m map[string]*gatewayv1.Workload) string {
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, k+"="+m[k].GetNamespace()+"/"+m[k].GetServiceAccount())
	}
	return strings.Join(out, " ")
}

// The table follows pods by address: a dual-stack pod is two addresses,
// the default service account is "default", a pod on the host network,
// a finished pod and a deleted one name no address, and an address reused
// by a new pod is not removed by the late delete of the old one.
func TestWorkloadTableFollowsPodsByAddress(t *testing.T) {
	kicks := 0
	tb := newWorkloadTable(func() { kicks++ }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	dual := pod("a", "u1", "10.0.0.1", "checkout", func(p *corev1.Pod) {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::1"})
	})
	tb.setPod(dual.UID, podWorkloads(dual))
	tb.setPod("u2", podWorkloads(pod("b", "u2", "10.0.0.2", "", nil)))
	tb.setPod("u3", podWorkloads(pod("c", "u3", "10.0.0.3", "x", func(p *corev1.Pod) { p.Spec.HostNetwork = true })))
	tb.setPod("u4", podWorkloads(pod("d", "u4", "10.0.0.4", "x", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })))
	if got, want := describe(tb.snapshot()), "10.0.0.1=shop/checkout 10.0.0.2=shop/default fd00::1=shop/checkout"; got != want {
		t.Fatalf("workloads %q, want %q", got, want)
	}
	// b dies; its address goes to a new pod e, then b's delete arrives.
	tb.setPod("u5", podWorkloads(pod("e", "u5", "10.0.0.2", "cart", nil)))
	tb.setPod("u2", nil)
	if got, want := describe(tb.snapshot()), "10.0.0.1=shop/checkout 10.0.0.2=shop/cart fd00::1=shop/checkout"; got != want {
		t.Fatalf("after reuse: %q, want %q", got, want)
	}
	before := kicks
	tb.setPod("u5", podWorkloads(pod("e", "u5", "10.0.0.2", "cart", nil)))
	if kicks != before {
		t.Error("an unchanged pod kicked the gateways")
	}
	tb.setPod("u1", nil)
	if got, want := describe(tb.snapshot()), "10.0.0.2=shop/cart"; got != want {
		t.Fatalf("after a's delete: %q, want %q", got, want)
	}
}

// The pod watcher fills the table from the cluster's Pods (client-go fake).
func TestWatchPodWorkloads(t *testing.T) {
	cs := kubefake.NewClientset(pod("a", "u1", "10.0.0.1", "checkout", nil))
	tb := newWorkloadTable(func() {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- watchPodWorkloads(ctx, cs, tb) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watchPodWorkloads: %v", err)
		}
	}()
	wait := func(want string) {
		t.Helper()
		if err := testenv.WaitFor(context.Background(), 10*time.Second, func(context.Context) error {
			if got := describe(tb.snapshot()); got != want {
				return fmt.Errorf("workloads %q, want %q", got, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	wait("10.0.0.1=shop/checkout")
	if _, err := cs.CoreV1().Pods("shop").Create(context.Background(), pod("b", "u2", "10.0.0.2", "cart", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("10.0.0.1=shop/checkout 10.0.0.2=shop/cart")
	if err := cs.CoreV1().Pods("shop").Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("10.0.0.2=shop/cart")
}

func TestParseFileCatalogWorkloads(t *testing.T) {
	c, err := ParseFileCatalog([]byte("workloads:\n- {address: 127.0.0.1, namespace: shop, serviceAccount: checkout}\n- {address: '::ffff:127.0.0.2', namespace: shop, serviceAccount: cart}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describe(c.catalog().workloads), "127.0.0.1=shop/checkout 127.0.0.2=shop/cart"; got != want {
		t.Fatalf("workloads %q, want %q", got, want)
	}
	for doc, field := range map[string]string{
		"workloads:\n- {address: nope, namespace: shop, serviceAccount: a}\n":                                                                "workloads[0].address",
		"workloads:\n- {address: 10.0.0.1, namespace: Shop, serviceAccount: a}\n":                                                            "workloads[0].namespace",
		"workloads:\n- {address: 10.0.0.1, namespace: shop, serviceAccount: 'a/b'}\n":                                                        "workloads[0].service_account",
		"workloads:\n- {address: 10.0.0.1, namespace: shop, serviceAccount: a}\n- {address: 10.0.0.1, namespace: shop, serviceAccount: b}\n": "workloads[1].address",
	} {
		if _, err := ParseFileCatalog([]byte(doc)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%q: %v, want an error naming %s", doc, err, field)
		}
	}
}
