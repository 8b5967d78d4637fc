package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/testenv"
)

// replica is one `meshfed agent --leader-elect` process of cluster west.
type replica struct {
	id       string
	httpAddr string
	metrics  string
	dns      string // --dns-bind
	bin      string
	args     []string
	cmd      *exec.Cmd
	log      string
	exited   chan struct{}
}

// start starts the replica's process (again), appending to its log.
func (r *replica) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(r.bin, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); _ = f.Close(); close(exited) }(r.cmd, r.exited)
}

// state reads the replica's /state.
func (r *replica) state(ctx context.Context) (*State, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.httpAddr+"/state", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var st State
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (r *replica) tail() string {
	b, _ := os.ReadFile(r.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// failoverRig is a federation of east (one in-process agent, exporting
// default/reviews) and west (two agent processes electing a leader).
type failoverRig struct {
	fed      *testenv.Federation
	ekc, wkc kubernetes.Interface
	emc, wmc mcsclient.Interface
	replicas []*replica
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

func startFailoverRig(t testing.TB) *failoverRig {
	t.Helper()
	ew := startEastWest(t, 1)
	fed, admin, east, west := ew.fed, ew.admin, ew.east, ew.west
	ctx := context.Background()
	r := &failoverRig{fed: fed, emc: ew.emc, wmc: ew.wmc, ekc: ew.ekc, wkc: ew.wkc}
	ecfg, wcfg := kubeConfig(t, east, t.TempDir()), kubeConfig(t, west, t.TempDir())
	if err := Join(ctx, ecfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	if err := Join(ctx, wcfg, createToken(t, admin, "west")); err != nil {
		t.Fatal(err)
	}
	startAgent(t, ecfg)
	createExport(t, r.ekc, r.emc, "default", "reviews", 8080, corev1.ServiceTypeClusterIP, "us-east-1a")

	bin := fed.Hub().Binary()
	for i := range 2 {
		dir := t.TempDir()
		rep := &replica{id: fmt.Sprintf("west-%d", i), log: filepath.Join(dir, "agent.log"),
			httpAddr: "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t)), metrics: "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t)),
			dns: "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))}
		_, port, _ := net.SplitHostPort(rep.httpAddr)
		// Restarted from the stored identity: no --cluster, --region, --zone.
		rep.args = []string{"agent", "--source", "kubernetes", "--kubeconfig", west.Kubeconfig(), "--data-dir", dir,
			"--http-port", port, "--gateway-api", "127.0.0.1:0", "--gateway-address", "10.99.0.1", "--metrics-bind", rep.metrics,
			"--dns-bind", rep.dns, "--leader-elect", "--leader-election-id", rep.id, "--log-level", "debug"}
		rep.bin = bin
		rep.start(t)
		t.Cleanup(func() {
			_ = rep.cmd.Process.Kill()
			<-rep.exited
			if t.Failed() {
				t.Logf("%s log tail:\n%s", rep.id, rep.tail())
			}
		})
		r.replicas = append(r.replicas, rep)
	}
	return r
}

// leader returns the replica holding the Lease.
func (r *failoverRig) leader(ctx context.Context) (*replica, error) {
	l, err := r.wkc.CoordinationV1().Leases(DefaultNamespace).Get(ctx, DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for _, rep := range r.replicas {
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == rep.id {
			return rep, nil
		}
	}
	return nil, fmt.Errorf("lease held by %v", l.Spec.HolderIdentity)
}

// importWrites counts the writes to the owned import objects of west from
// now on, by kind and object.
type importWrites struct {
	mu     sync.Mutex
	events []string
	stop   func()
}

func (r *failoverRig) watchImports(t testing.TB) *importWrites {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &importWrites{stop: cancel}
	sel := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue}
	watchers := map[string]func() (watch.Interface, error){
		"ServiceImport": func() (watch.Interface, error) {
			l, err := r.wmc.MulticlusterV1alpha1().ServiceImports("").List(ctx, sel)
			if err != nil {
				return nil, err
			}
			o := sel
			o.ResourceVersion = l.ResourceVersion
			return r.wmc.MulticlusterV1alpha1().ServiceImports("").Watch(ctx, o)
		},
		"Service": func() (watch.Interface, error) {
			l, err := r.wkc.CoreV1().Services("").List(ctx, sel)
			if err != nil {
				return nil, err
			}
			o := sel
			o.ResourceVersion = l.ResourceVersion
			return r.wkc.CoreV1().Services("").Watch(ctx, o)
		},
		"EndpointSlice": func() (watch.Interface, error) {
			l, err := r.wkc.DiscoveryV1().EndpointSlices("").List(ctx, sel)
			if err != nil {
				return nil, err
			}
			o := sel
			o.ResourceVersion = l.ResourceVersion
			return r.wkc.DiscoveryV1().EndpointSlices("").Watch(ctx, o)
		},
	}
	for kind, start := range watchers {
		wi, err := start()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer wi.Stop()
			for ev := range wi.ResultChan() {
				m, err := metaOf(ev.Object)
				if err != nil {
					continue
				}
				w.mu.Lock()
				w.events = append(w.events, fmt.Sprintf("%s %s %s/%s uid=%s", ev.Type, kind, m.GetNamespace(), m.GetName(), m.GetUID()))
				w.mu.Unlock()
			}
		}()
	}
	t.Cleanup(cancel)
	return w
}

func metaOf(o any) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, errors.New("not an object")
	}
	return m, nil
}

// of returns the events on objects of service name.
func (w *importWrites) of(name string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.events {
		if strings.Contains(e, "default/"+name+" ") || strings.Contains(e, "default/"+derivedName(name)+" ") {
			out = append(out, e)
		}
	}
	return out
}

// failover kills the leader with SIGKILL as east exports default/ratings,
// and returns the time until the other replica holds the Lease and until
// it wrote ratings' ServiceImport (serving writes).
func (r *failoverRig) failover(t testing.TB, old *replica, name string) (takeover, writing time.Duration, next *replica) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	if err := old.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-old.exited
	createExport(t, r.ekc, r.emc, "default", name, 9080, corev1.ServiceTypeClusterIP, "us-east-1a")
	var took time.Time
	err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		if took.IsZero() {
			l, err := r.leader(ctx)
			if err != nil {
				return err
			}
			if l == old {
				return errors.New("the killed replica still holds the Lease")
			}
			took, next = time.Now(), l
		}
		_, err := r.wmc.MulticlusterV1alpha1().ServiceImports("default").Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("after the leader's death: %v", err)
	}
	return took.Sub(start), time.Since(start), next
}

// The leader is killed under a watch: the standby takes the Lease within
// 15 s and then serves writes, and what the old leader imported is neither
// deleted nor recreated nor rewritten. Before that the standby, read-only,
// already serves the import with the leader's egress port.
func TestLeaderDeathStandbyTakesOverWithoutImportChurn(t *testing.T) {
	r := startFailoverRig(t)
	ctx := context.Background()
	var uids []types.UID
	var egress int32
	var clusterIP netip.Addr
	if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		si, es, err := importObjects(ctx, r.wkc, r.wmc, "default", "reviews")
		if err != nil {
			return err
		}
		svc, err := r.wkc.CoreV1().Services("default").Get(ctx, derivedName("reviews"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		uids, egress = []types.UID{si.UID, es.UID, svc.UID}, *es.Ports[0].Port
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil {
			return fmt.Errorf("derived Service cluster IP %q: %w", svc.Spec.ClusterIP, err)
		}
		clusterIP = ip
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var leader, standby *replica
	if err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		l, err := r.leader(ctx)
		if err != nil {
			return err
		}
		leader = l
		standby = r.replicas[0]
		if standby == leader {
			standby = r.replicas[1]
		}
		st, err := standby.state(ctx)
		if err != nil {
			return err
		}
		if !st.Hub.Connected {
			return errors.New("standby not connected to the hub")
		}
		p := findImport(*st, "default/reviews")
		if p == nil || p.Egress["http"] != int(egress) {
			return fmt.Errorf("standby's import %+v, want egress port %d as the leader recorded", p, egress)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The standby serves clusterset.local from its warm view, with the
	// ClusterSetIP the leader's derived Service holds.
	waitA(t, standby.dns, "reviews.default.svc.clusterset.local.", clusterIP, 20*time.Second)
	// Prometheus reaches /metrics on --metrics-bind; /state is not there.
	if code := httpStatus(t, "http://"+standby.metrics+"/metrics"); code != http.StatusOK {
		t.Errorf("standby /metrics on --metrics-bind: %d", code)
	}
	if code := httpStatus(t, "http://"+standby.metrics+"/state"); code != http.StatusNotFound {
		t.Errorf("standby /state on --metrics-bind: %d, want 404", code)
	}

	w := r.watchImports(t)
	takeover, writing, next := r.failover(t, leader, "ratings")
	t.Logf("takeover %v, serving writes %v after the kill", takeover, writing)
	if next != standby {
		t.Fatalf("new leader %s, want the standby %s", next.id, standby.id)
	}
	if takeover > 15*time.Second {
		t.Errorf("the standby took the Lease %v after the leader's death, want within 15 s", takeover)
	}
	// Let the new leader's reconciles settle: ratings is written, and
	// reviews' objects must have seen no event at all.
	if err := testenv.WaitFor(ctx, 20*time.Second, func(ctx context.Context) error {
		_, _, err := importObjects(ctx, r.wkc, r.wmc, "default", "ratings")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if ev := w.of("reviews"); len(ev) != 0 {
		t.Errorf("writes to reviews' import objects across the failover: %v", ev)
	}
	si, es, err := importObjects(ctx, r.wkc, r.wmc, "default", "reviews")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := r.wkc.CoreV1().Services("default").Get(ctx, derivedName("reviews"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := []types.UID{si.UID, es.UID, svc.UID}; got[0] != uids[0] || got[1] != uids[1] || got[2] != uids[2] {
		t.Errorf("UIDs %v after the failover, want %v", got, uids)
	}
	if len(w.of("ratings")) == 0 {
		t.Error("the watch saw no write of ratings: it would not have seen reviews' either")
	}
}

func httpStatus(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// BenchmarkLeaderFailover: the time from SIGKILL of the leader replica to
// the standby holding the Lease (takeover) and to its first import written
// (serving writes: a service exported at the kill is imported), with the
// default Lease timings, over 3 failovers; the killed replica is restarted
// as the standby of the next round.
func BenchmarkLeaderFailover(b *testing.B) {
	r := startFailoverRig(b)
	ctx := context.Background()
	var takeovers, writes []time.Duration
	for b.Loop() {
		for round := range 3 {
			var leader, standby *replica
			if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
				l, err := r.leader(ctx)
				if err != nil {
					return err
				}
				leader, standby = l, r.replicas[0]
				if standby == leader {
					standby = r.replicas[1]
				}
				st, err := standby.state(ctx)
				if err != nil {
					return err
				}
				if !st.Hub.Connected || findImport(*st, "default/reviews") == nil {
					return errors.New("standby not warm")
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			takeover, writing, _ := r.failover(b, leader, "ratings-"+strconv.Itoa(round))
			b.Logf("round %d: takeover %v, serving writes %v", round, takeover, writing)
			takeovers, writes = append(takeovers, takeover), append(writes, writing)
			leader.start(b) // back as the standby
		}
	}
	b.ReportMetric(maxDuration(takeovers).Seconds(), "max_takeover_s")
	b.ReportMetric(maxDuration(writes).Seconds(), "max_serving_writes_s")
	b.ReportMetric(meanDuration(writes).Seconds(), "mean_serving_writes_s")
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func meanDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}
