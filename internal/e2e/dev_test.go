package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/devenv"
	"github.com/meshfed/meshfed/internal/wait"
)

// devProc is a running `meshfed dev`.
type devProc struct {
	t    *testing.T
	dir  string
	cmd  *exec.Cmd
	out  *syncBuffer   // stdout and stderr
	done chan struct{} // closed once it exited
}

// syncBuffer is a bytes.Buffer that may be read while the process writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// freeBasePort returns a base port whose whole plan (devenv.PortSpan
// ports, TCP and UDP) is free right now, below Linux's ephemeral range
// (32768 and up), where outgoing connections could take a port between
// this check and the children's binds.
func freeBasePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		base := 20000 + 10*rand.IntN((32768-devenv.PortSpan-20000)/10)
		if portsFree(base, devenv.PortSpan) {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func portsFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		_ = ln.Close()
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		_ = pc.Close()
	}
	return true
}

// startDev starts `meshfed dev` on dir and base with the extra environment;
// a cleanup kills it and every process dev.json names if the test left
// them running.
func startDev(t *testing.T, dir string, base int, env ...string) *devProc {
	t.Helper()
	return startDevArgs(t, dir, base, nil, env...)
}

// startDevArgs is startDev with arguments after `meshfed dev`.
func startDevArgs(t *testing.T, dir string, base int, args []string, env ...string) *devProc {
	t.Helper()
	d := &devProc{t: t, dir: dir, out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(binary, append([]string{"dev"}, args...)...)
	d.cmd.Env = append(os.Environ(), append([]string{"MESHFED_DEV_DIR=" + dir, "MESHFED_DEV_PORT=" + strconv.Itoa(base)}, env...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill() // its children die with it (Pdeathsig)
			<-d.done
		}
		if t.Failed() {
			t.Logf("meshfed dev output:\n%s", d.out.String())
			logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("--- %s (tail) ---\n%s", filepath.Base(l), b)
			}
		}
	})
	return d
}

func (d *devProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitFile waits for dev.json and returns it.
func (d *devProc) waitFile(ctx context.Context, what string, ok func(*devenv.File) error) *devenv.File {
	d.t.Helper()
	var f *devenv.File
	err := wait.Poll(ctx, wait.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}, what, func(context.Context) error {
		if d.exited() {
			return wait.Permanent(fmt.Errorf("meshfed dev exited: %v", d.cmd.ProcessState))
		}
		var err error
		if f, err = devenv.ReadFile(d.dir); err != nil {
			return err
		}
		return ok(f)
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return f
}

// stop sends SIGTERM and waits for the exit; it returns the exit code.
func (d *devProc) stop(timeout time.Duration) int {
	d.t.Helper()
	return d.stopWith(syscall.SIGTERM, timeout)
}

// stopWith sends sig and waits for the exit; it returns the exit code.
func (d *devProc) stopWith(sig syscall.Signal, timeout time.Duration) int {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("meshfed dev did not stop within %v of %v", timeout, sig)
	}
	return d.cmd.ProcessState.ExitCode()
}

// pids are every process dev.json names (a failed one has pid 0: none).
func pids(f *devenv.File) map[int]string {
	m := map[int]string{}
	defer delete(m, 0)
	for _, s := range f.Hub.Servers {
		m[s.PID] = s.Name
	}
	for _, c := range f.Clusters {
		m[c.Agent.PID] = c.Name + " agent"
		for _, g := range c.Gateways {
			m[g.PID] = g.Instance
		}
		for _, w := range c.Workloads {
			m[w.PID] = c.Name + " " + w.Instance
		}
	}
	return m
}

// leftovers returns the processes still alive among pids, and every
// process whose command line names dir (the hub servers, agents and
// gateways all do).
func leftovers(dir string, pids map[int]string) []string {
	var left []string
	for pid, name := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			left = append(left, fmt.Sprintf("%s (pid %d)", name, pid))
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(dir)) {
			left = append(left, fmt.Sprintf("%s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return left
}

// getReply sends GET through an egress and decodes the workload's answer.
func getReply(ctx context.Context, addr string) (devenv.Reply, error) {
	var r devenv.Reply
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/test", nil)
	if err != nil {
		return r, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return r, err
	}
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("%s: %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("%q: %w", body, err)
	}
	return r, nil
}

func cluster(t *testing.T, f *devenv.File, name string) devenv.Cluster {
	t.Helper()
	for _, c := range f.Clusters {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("dev.json has no cluster %s", name)
	return devenv.Cluster{}
}

// TestDevCarriesTrafficAndSurvivesAKilledGateway runs `meshfed dev`, sends
// HTTP and TCP traffic through the gateways' egress ports, kills east's
// gateway (dev restarts it, requests keep succeeding), then stops dev with
// SIGTERM and checks no child is left.
func TestDevCarriesTrafficAndSurvivesAKilledGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	d := startDev(t, dir, freeBasePort(t))
	f := d.waitFile(ctx, "dev.json", func(*devenv.File) error { return nil })
	t.Logf("ready in %.2fs (cold)", f.ReadySeconds)

	// The fields other checks rely on.
	if _, err := os.Stat(f.Hub.Config); err != nil {
		t.Errorf("hub.config: %v", err)
	}
	if len(f.Hub.Servers) != 3 {
		t.Fatalf("hub.servers: %d, want 3", len(f.Hub.Servers))
	}
	wantLoc := map[string][2]string{"east": {"us-east", "us-east-1a"}, "west": {"us-west", "us-west-1a"}, "central": {"eu-central", "eu-central-1a"}}
	if len(f.Clusters) != len(wantLoc) {
		t.Fatalf("clusters: %d, want %d", len(f.Clusters), len(wantLoc))
	}
	ingress := map[string]bool{}
	for _, c := range f.Clusters {
		if l := wantLoc[c.Name]; c.Region != l[0] || c.Zone != l[1] {
			t.Errorf("cluster %s: %s/%s, want %s/%s", c.Name, c.Region, c.Zone, l[0], l[1])
		}
		if c.Agent.PID == 0 || len(c.Gateways) != 1 || c.Gateways[0].PID == 0 || c.Gateways[0].Ingress == "" || c.Gateways[0].Metrics == "" {
			t.Errorf("cluster %s: agent %+v, gateways %+v", c.Name, c.Agent, c.Gateways)
		}
		for _, g := range c.Gateways {
			if ingress[g.Ingress] {
				t.Errorf("ingress %s used twice", g.Ingress)
			}
			ingress[g.Ingress] = true
		}
		for _, k := range []string{"default/reviews:8080", "default/ratings:9090"} {
			if _, _, err := net.SplitHostPort(c.Egress[k]); err != nil {
				t.Errorf("cluster %s: egress[%s] = %q", c.Name, k, c.Egress[k])
			}
		}
		for _, w := range c.Workloads {
			if w.PID == 0 || w.Address == "" || w.Service == "" {
				t.Errorf("cluster %s: workload %+v", c.Name, w)
			}
		}
	}
	// As in a cluster: each agent's DNS resolves the names to the
	// ClusterSetIPs, where the gateway answers on the service's port.
	for _, c := range f.Clusters {
		ip, err := devenv.ResolveA(ctx, c.DNS, "reviews.default.svc.clusterset.local")
		if err != nil {
			t.Fatalf("cluster %s: DNS at %q: %v", c.Name, c.DNS, err)
		}
		if ip.String() != c.ClusterSetIPs["default/reviews"] {
			t.Errorf("cluster %s: reviews resolves to %v, dev.json says %q", c.Name, ip, c.ClusterSetIPs["default/reviews"])
		}
		if r, err := getReply(ctx, net.JoinHostPort(ip.String(), "8080")); err != nil || r.Service != "default/reviews" {
			t.Errorf("cluster %s: GET %s:8080: %+v, %v", c.Name, ip, r, err)
		}
		ip, err = devenv.ResolveA(ctx, c.DNS, "ratings.default.svc.clusterset.local")
		if err != nil {
			t.Fatalf("cluster %s: DNS: %v", c.Name, err)
		}
		if err := devenv.Echo(ctx, net.JoinHostPort(ip.String(), "9090"), []byte("via the ClusterSetIP\n")); err != nil {
			t.Errorf("cluster %s: echo at %s:9090: %v", c.Name, ip, err)
		}
	}
	east, west, central := cluster(t, f, "east"), cluster(t, f, "west"), cluster(t, f, "central")
	if len(east.Workloads) != 2 || len(west.Workloads) != 2 || east.Workloads[0].Service != "default/reviews" || central.Workloads[0].Service != "default/ratings" {
		t.Errorf("workloads: east %+v, west %+v, central %+v", east.Workloads, west.Workloads, central.Workloads)
	}

	// HTTP from west, TCP from east (served by central).
	westReviews, centralReviews := west.Egress["default/reviews:8080"], central.Egress["default/reviews:8080"]
	for i := range 10 {
		r, err := getReply(ctx, westReviews)
		if err != nil {
			t.Fatalf("request %d through west's egress: %v", i, err)
		}
		if r.Service != "default/reviews" || (r.Cluster != "east" && r.Cluster != "west") || r.Instance == "" || r.Zone == "" {
			t.Fatalf("request %d through west's egress answered %+v", i, r)
		}
	}
	for i := range 5 {
		msg := []byte(fmt.Sprintf("hello central %d\n", i))
		if err := devenv.Echo(ctx, east.Egress["default/ratings:9090"], msg); err != nil {
			t.Fatalf("echo %d through east's egress: %v", i, err)
		}
	}

	// Kill east's gateway: dev keeps running and restarts it; requests from
	// west, and from central (which east and west both serve), go on.
	oldGW := east.Gateways[0].PID
	if err := syscall.Kill(oldGW, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	failed := 0
	var fromCentral []string
	// The restart comes after the 2 s backoff.
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	f = d.waitFile(rctx, "east's gateway restarted, in dev.json", func(f *devenv.File) error {
		for _, addr := range []string{westReviews, centralReviews} {
			r, err := getReply(ctx, addr)
			if err != nil {
				failed++
				t.Errorf("a request through %s while east's gateway was down: %v", addr, err)
				continue
			}
			if addr == centralReviews {
				fromCentral = append(fromCentral, r.Cluster)
			}
		}
		if pid := cluster(t, f, "east").Gateways[0].PID; pid == 0 || pid == oldGW {
			return fmt.Errorf("east's gateway pid is %d", pid)
		}
		return nil
	})
	if d.exited() {
		t.Fatal("meshfed dev exited after east's gateway was killed")
	}
	t.Logf("while east's gateway was down: %d failed; central's requests answered by %v", failed, fromCentral)
	// East serves again once its new gateway is up.
	if err := wait.Poll(ctx, wait.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}, "an answer from east through central's egress", func(ctx context.Context) error {
		r, err := getReply(ctx, centralReviews)
		if err != nil {
			return err
		}
		if r.Cluster != "east" {
			return fmt.Errorf("answered by %s", r.Cluster)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	all := pids(f)
	all[oldGW] = "east's first gateway"
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("meshfed dev exited %d after SIGTERM, want 0", code)
	}
	if left := leftovers(dir, all); len(left) > 0 {
		t.Errorf("left running after meshfed dev stopped:\n%s", strings.Join(left, "\n"))
	}
}

// TestDevOneShotStopsAfterDevJSONAndComesBackWarm runs MESHFED_DEV_ONESHOT=1
// twice on one state directory: each run exits 0 once dev.json is written
// and verified, with no child left; the second brings the same federation
// back from its data (the clusters do not join again).
func TestDevOneShotStopsAfterDevJSONAndComesBackWarm(t *testing.T) {
	dir := t.TempDir()
	base := freeBasePort(t)
	for i, run := range []string{"cold", "warm"} {
		d := startDev(t, dir, base, "MESHFED_DEV_ONESHOT=1")
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s run: still running after 60s", run)
		}
		if code := d.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s run: exit %d, want 0", run, code)
		}
		f, err := devenv.ReadFile(dir)
		if err != nil {
			t.Fatalf("%s run: %v", run, err)
		}
		t.Logf("%s run: ready in %.2fs", run, f.ReadySeconds)
		if !strings.Contains(d.out.String(), "ready in") {
			t.Errorf("%s run: no summary in the output", run)
		}
		if left := leftovers(dir, pids(f)); len(left) > 0 {
			t.Errorf("%s run: left running:\n%s", run, strings.Join(left, "\n"))
		}
		joins := strings.Count(d.out.String(), "created a join token")
		if want := []int{3, 0}[i]; joins != want {
			t.Errorf("%s run: %d join tokens created, want %d", run, joins, want)
		}
	}
}

// TestDevChildrenDieWithAKilledSupervisor kills `meshfed dev` outright
// (SIGKILL: no chance to stop anything): its children must not outlive it
// (Pdeathsig).
func TestDevChildrenDieWithAKilledSupervisor(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	d := startDev(t, dir, freeBasePort(t))
	f := d.waitFile(ctx, "dev.json", func(*devenv.File) error { return nil })
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	all := pids(f)
	if err := wait.Poll(ctx, wait.Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}, "every child gone", func(context.Context) error {
		if left := leftovers(dir, all); len(left) > 0 {
			return fmt.Errorf("still running:\n%s", strings.Join(left, "\n"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// liveLine is one line of the live view.
type liveLine struct {
	answered map[string]int // by cluster
	failed   int
	faults   string // "west gateway, ..." or ""
	text     string
}

var liveRE = regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d central → reviews: (.*?), failed (\d+)(?:  \(failed on purpose: (.*)\))?$`)

// liveLines parses every line of the live view printed so far.
func (d *devProc) liveLines() []liveLine {
	var ls []liveLine
	for _, m := range liveRE.FindAllStringSubmatch(d.out.String(), -1) {
		l := liveLine{answered: map[string]int{}, faults: m[3], text: m[0]}
		l.failed, _ = strconv.Atoi(m[2])
		for _, part := range strings.Split(m[1], ", ") {
			name, n, _ := strings.Cut(part, " ")
			l.answered[name], _ = strconv.Atoi(n)
		}
		ls = append(ls, l)
	}
	return ls
}

// waitLive waits for n lines of the live view after the first `from`
// that all satisfy ok, and fails the test at a line with failed calls.
// It returns the number of lines seen.
func (d *devProc) waitLive(ctx context.Context, what string, from, n int, ok func(liveLine) bool) int {
	d.t.Helper()
	var seen int
	err := wait.Poll(ctx, wait.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}, what, func(context.Context) error {
		if d.exited() {
			return wait.Permanent(fmt.Errorf("meshfed dev exited: %v", d.cmd.ProcessState))
		}
		ls := d.liveLines()
		seen = len(ls)
		run := 0
		for _, l := range ls[min(from, len(ls)):] {
			if l.failed > 0 {
				return wait.Permanent(fmt.Errorf("calls failed: %s", l.text))
			}
			if ok(l) {
				run++
			} else {
				run = 0
			}
		}
		if run < n {
			return fmt.Errorf("%d lines in a row so far (of %d lines)", run, len(ls))
		}
		return nil
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return seen
}

// devCLI runs `meshfed dev <args> --state-dir dir` and returns its stdout.
func devCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := run(t, append(append([]string{"dev"}, args...), "--state-dir", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// agentConnected reads an agent's /state: is it connected to the hub?
func agentConnected(ctx context.Context, addr string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/state", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer func() { _ = resp.Body.Close() }()
	var st struct {
		Hub struct {
			Connected bool `json:"connected"`
		} `json:"hub"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, err
	}
	return st.Hub.Connected, nil
}

// TestDevFailAndHealOnDemandWithTheLiveView runs `meshfed dev --live` and,
// from the outside, makes parts of clusters fail with `meshfed dev fail`
// and heals them with `meshfed dev heal`, reading the live view's lines:
// west's gateway down moves central's calls to east with none failing and
// stays down past the restart backoff; east's workloads down moves them to
// west; west's agent down or west cut off the hub leaves west serving (the
// agent reconnects after the heal); not one call fails throughout. Then
// SIGINT (Ctrl-C) leaves no process behind.
func TestDevFailAndHealOnDemandWithTheLiveView(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	dir := t.TempDir()
	d := startDevArgs(t, dir, freeBasePort(t), []string{"--live"})
	f := d.waitFile(ctx, "dev.json", func(*devenv.File) error { return nil })
	all := pids(f)
	both := func(l liveLine) bool { return l.answered["east"] > 0 && l.answered["west"] > 0 && l.faults == "" }
	seen := d.waitLive(ctx, "east and west answering central", 0, 2, both)

	// West's gateway.
	westGW := cluster(t, f, "west").Gateways[0].PID
	if out := devCLI(t, dir, "fail", "--cluster", "west", "--what", "gateway"); !strings.Contains(out, "failed west gateway") {
		t.Errorf("meshfed dev fail said %q", out)
	}
	if err := syscall.Kill(westGW, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("west's gateway (pid %d) is still running after fail: %v", westGW, err)
	}
	onlyEast := func(l liveLine) bool {
		return l.answered["west"] == 0 && l.answered["east"] > 0 && l.faults == "west gateway"
	}
	// 4 s without west: twice the 2 s restart backoff, so a restart would show.
	seen = d.waitLive(ctx, "central answered by east alone", seen, 4, onlyEast)
	f, err := devenv.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid := cluster(t, f, "west").Gateways[0].PID; pid != 0 || len(f.Failures) != 1 {
		t.Errorf("dev.json while west's gateway is failed: its pid %d, failures %+v; want 0 and one", pid, f.Failures)
	}
	if out := devCLI(t, dir, "heal", "--cluster", "west"); !strings.Contains(out, "healed west gateway") || !strings.Contains(out, "failed now: nothing") {
		t.Errorf("meshfed dev heal said %q", out)
	}
	seen = d.waitLive(ctx, "west answering central again", seen, 1, both)

	// East's workloads: the gateways route around them.
	devCLI(t, dir, "fail", "--cluster", "east", "--what", "workloads")
	seen = d.waitLive(ctx, "central answered by west alone", seen, 2, func(l liveLine) bool {
		return l.answered["east"] == 0 && l.answered["west"] > 0 && l.faults == "east workloads"
	})
	devCLI(t, dir, "heal")
	seen = d.waitLive(ctx, "east answering central again", seen, 1, both)

	// West's agent, then west cut off the hub: its gateway keeps serving.
	devCLI(t, dir, "fail", "--cluster", "west", "--what", "agent")
	seen = d.waitLive(ctx, "west serving without its agent", seen, 2, func(l liveLine) bool {
		return l.answered["west"] > 0 && l.faults == "west agent"
	})
	devCLI(t, dir, "heal", "--what", "agent")
	f = d.waitFile(ctx, "west's agent back in dev.json", func(f *devenv.File) error {
		if cluster(t, f, "west").Agent.PID == 0 {
			return errors.New("no pid yet")
		}
		return nil
	})
	all = mergePIDs(all, pids(f))
	westAgent := cluster(t, f, "west").Agent.HTTP
	poll := wait.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	connected := func(want bool) func(context.Context) error {
		return func(ctx context.Context) error {
			c, err := agentConnected(ctx, westAgent)
			if err != nil {
				return err
			}
			if c != want {
				return fmt.Errorf("connected: %v", c)
			}
			return nil
		}
	}
	if err := wait.Poll(ctx, poll, "west's agent connected", connected(true)); err != nil {
		t.Fatal(err)
	}
	devCLI(t, dir, "fail", "--cluster", "west", "--what", "hub-link")
	// The agent notices the silence within its heartbeat bound (6 s).
	if err := wait.Poll(ctx, poll, "west's agent cut off the hub", connected(false)); err != nil {
		t.Fatal(err)
	}
	seen = d.waitLive(ctx, "west serving while cut off the hub", seen, 2, func(l liveLine) bool {
		return l.answered["west"] > 0 && l.answered["east"] > 0 && l.faults == "west hub-link"
	})
	devCLI(t, dir, "heal", "--cluster", "west", "--what", "hub-link")
	if err := wait.Poll(ctx, poll, "west's agent back on the hub", connected(true)); err != nil {
		t.Fatal(err)
	}
	d.waitLive(ctx, "both answering, nothing failed", seen, 1, both)

	f, err = devenv.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	all = mergePIDs(all, pids(f))
	// Ctrl-C at a terminal: SIGINT to meshfed dev alone (its children are
	// in process groups of their own).
	if code := d.stopWith(syscall.SIGINT, 30*time.Second); code != 0 {
		t.Errorf("meshfed dev exited %d after SIGINT, want 0", code)
	}
	if left := leftovers(dir, all); len(left) > 0 {
		t.Errorf("left running after meshfed dev stopped:\n%s", strings.Join(left, "\n"))
	}
}

func mergePIDs(a, b map[int]string) map[int]string {
	for k, v := range b {
		a[k] = v
	}
	return a
}
