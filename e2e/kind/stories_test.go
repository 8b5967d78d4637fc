//go:build e2ekind

package kind

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/devenv"
)

// reviewsURL is what the calling pod in central asks for.
const reviewsURL = "http://reviews.default.svc.clusterset.local:8080/kind-e2e"

// kubeconfig returns the kubeconfig of one of make kind-up's clusters.
func kubeconfig(t *testing.T, cluster string) string {
	t.Helper()
	root := os.Getenv("MESHFED_KIND_CACHE")
	if root == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		root = filepath.Join(cache, "meshfed", "kind")
	}
	path := filepath.Join(root, "clusters", cluster+".kubeconfig")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("cluster %s: %v (run make kind-up first)", cluster, err)
	}
	return path
}

// kubectl runs kubectl against a cluster and returns its output.
func kubectl(t *testing.T, cluster string, args ...string) string {
	t.Helper()
	out, err := exec.Command("kubectl", append([]string{"--kubeconfig", kubeconfig(t, cluster)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s (%s): %v\n%s", strings.Join(args, " "), cluster, err, out)
	}
	return string(out)
}

var callers atomic.Int32

// caller is a pod in central running `meshfed dev call` against reviews,
// its per-second lines read as they come.
type caller struct {
	name    string
	seconds chan devenv.CallSecond // closed when the pod's log ends
	total   chan devenv.CallReport // the final line, once
}

// startCaller runs a calling pod for d at rate calls a second and follows
// its log.
func startCaller(t *testing.T, rate int, d time.Duration) *caller {
	t.Helper()
	c := &caller{name: fmt.Sprintf("caller-%d-%d", os.Getpid(), callers.Add(1)),
		seconds: make(chan devenv.CallSecond, 1024), total: make(chan devenv.CallReport, 1)}
	kubectl(t, "central", "-n", "default", "run", c.name, "--image=meshfed:kind", "--image-pull-policy=IfNotPresent",
		"--restart=Never", "--", "dev", "call", "--url="+reviewsURL, "--service=default/reviews",
		"--rate="+strconv.Itoa(rate), "--duration="+d.String())
	t.Cleanup(func() {
		kubectl(t, "central", "-n", "default", "delete", "pod", c.name, "--wait=false", "--ignore-not-found")
	})
	kubectl(t, "central", "-n", "default", "wait", "--for=condition=Ready", "pod/"+c.name, "--timeout=120s")
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	logs := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig(t, "central"), "-n", "default", "logs", "-f", c.name)
	out, err := logs.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		defer close(c.seconds)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Bytes()
			var total struct {
				Total *devenv.CallReport `json:"total"`
			}
			if json.Unmarshal(line, &total) == nil && total.Total != nil {
				c.total <- *total.Total
				continue
			}
			var s devenv.CallSecond
			if json.Unmarshal(line, &s) == nil {
				c.seconds <- s
			}
		}
		_ = logs.Wait()
	}()
	return c
}

// next returns the caller's next second; the test fails if its log ended.
func (c *caller) next(t *testing.T) devenv.CallSecond {
	t.Helper()
	s, ok := <-c.seconds
	if !ok {
		t.Fatalf("%s: the log ended", c.name)
	}
	if s.Failed > 0 {
		t.Errorf("%s, second %d: %d calls failed: %v", c.name, s.Second, s.Failed, s.Errors)
	}
	return s
}

// until reads seconds until cond holds, for at most n of them.
func (c *caller) until(t *testing.T, n int, what string, cond func(devenv.CallSecond) bool) devenv.CallSecond {
	t.Helper()
	for range n {
		if s := c.next(t); cond(s) {
			return s
		}
	}
	t.Fatalf("%s: not within %d s: %s", c.name, n, what)
	return devenv.CallSecond{}
}

// stop ends the calling pod (SIGTERM: it prints its totals and exits).
func (c *caller) stop(t *testing.T) {
	t.Helper()
	kubectl(t, "central", "-n", "default", "delete", "pod", c.name, "--wait=false")
}

// finish waits for the caller's totals and checks nothing failed.
func (c *caller) finish(t *testing.T) devenv.CallReport {
	t.Helper()
	for s := range c.seconds {
		if s.Failed > 0 {
			t.Errorf("%s, second %d: %d calls failed: %v", c.name, s.Second, s.Failed, s.Errors)
		}
	}
	select {
	case total := <-c.total:
		t.Logf("%s: %d calls, answered %v, failed %d", c.name, total.Calls, total.Answered, total.Failed)
		if total.Failed > 0 || total.Calls == 0 {
			t.Fatalf("%s: %d of %d calls failed: %v", c.name, total.Failed, total.Calls, total.Errors)
		}
		return total
	default:
		t.Fatalf("%s: no totals in its log", c.name)
		return devenv.CallReport{}
	}
}

func answeredBy(s devenv.CallSecond, cluster string) bool { return s.Answered[cluster] > 0 }

func onlyBy(cluster string) func(devenv.CallSecond) bool {
	return func(s devenv.CallSecond) bool {
		return len(s.Answered) == 1 && s.Answered[cluster] > 0
	}
}

func TestPodInCentralCallsReviewsByClustersetName(t *testing.T) {
	c := startCaller(t, 10, 10*time.Second)
	total := c.finish(t)
	if total.Answered["east"]+total.Answered["west"] != total.Calls {
		t.Fatalf("answered by %v, want east and west only", total.Answered)
	}
}

func TestDeletingEastsReviewsUnderLoadMovesTrafficToWest(t *testing.T) {
	c := startCaller(t, 20, 10*time.Minute)
	c.until(t, 30, "east answers", func(s devenv.CallSecond) bool { return answeredBy(s, "east") })
	t.Cleanup(func() {
		kubectl(t, "east", "-n", "default", "scale", "deployment/reviews", "--replicas=2")
		kubectl(t, "east", "-n", "default", "rollout", "status", "deployment/reviews", "--timeout=120s")
	})
	kubectl(t, "east", "-n", "default", "scale", "deployment/reviews", "--replicas=0")
	start := time.Now()
	c.until(t, 30, "only west answers", onlyBy("west"))
	t.Logf("traffic left east %.1f s after its reviews pods were deleted", time.Since(start).Seconds())
	// From then on, west answers everything.
	for range 10 {
		if s := c.next(t); answeredBy(s, "east") {
			t.Fatalf("second %d: east answered %d calls with no reviews pod", s.Second, s.Answered["east"])
		}
	}
	kubectl(t, "east", "-n", "default", "scale", "deployment/reviews", "--replicas=2")
	c.until(t, 60, "east answers again", func(s devenv.CallSecond) bool { return answeredBy(s, "east") })
	c.stop(t)
	c.finish(t)
}

func TestDeletingAGatewayPodFailsOver(t *testing.T) {
	c := startCaller(t, 20, 10*time.Minute)
	c.until(t, 30, "east answers", func(s devenv.CallSecond) bool { return answeredBy(s, "east") })
	pod := strings.TrimSpace(kubectl(t, "east", "-n", "meshfed-system", "get", "pods", "-l", "app.kubernetes.io/name=meshfed-gateway",
		"-o", "jsonpath={.items[0].metadata.name}"))
	kubectl(t, "east", "-n", "meshfed-system", "delete", "pod", pod, "--wait=false")
	start := time.Now()
	c.until(t, 30, "only west answers", onlyBy("west"))
	t.Logf("traffic left east %.1f s after its gateway pod %s was deleted", time.Since(start).Seconds(), pod)
	s := c.until(t, 90, "east answers again (its new gateway)", func(s devenv.CallSecond) bool { return answeredBy(s, "east") })
	t.Logf("east answered again %.1f s after (second %d)", time.Since(start).Seconds(), s.Second)
	c.stop(t)
	c.finish(t)
}
