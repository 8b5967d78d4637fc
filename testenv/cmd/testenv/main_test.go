package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/testenv"
)

func TestUpFlagsAreValidatedByName(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"up", "--clusters", "0", "--kubeconfig", "k"}, "--clusters"},
		{[]string{"up", "--clusters", "10", "--kubeconfig", "k"}, "--clusters"},
		{[]string{"up", "--hub-servers", "2", "--kubeconfig", "k"}, "--hub-servers"},
		{[]string{"up"}, "--kubeconfig"},
		{[]string{"up", "--kubeconfig", "k", "--ready-timeout", "0s"}, "--ready-timeout"},
		{[]string{"down"}, "up"},
		{[]string{"up", "--kubeconfig", "k", "extra"}, "extra"},
	} {
		err := run(tc.args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%q: %v, want a usage error naming %s", tc.args, err, tc.flag)
		}
	}
}

func TestUpOptionsNameClustersForContexts(t *testing.T) {
	o := upConfig{Clusters: 3, HubServers: 1, Kubeconfig: "k", Pods: true, ReadyTimeout: time.Minute}.options()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range o.Clusters {
		if !c.Pods {
			t.Errorf("cluster %s without Pods", c.Name)
		}
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "c1,c2,c3" {
		t.Fatalf("clusters %s, want c1,c2,c3", got)
	}
}

// upProcess is a running `testenv up`.
type upProcess struct {
	cmd        *exec.Cmd
	kubeconfig string
	mu         sync.Mutex
	out        bytes.Buffer // guarded by mu
	exited     chan struct{}
}

func (u *upProcess) output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.String()
}

type lockedWriter struct{ u *upProcess }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.u.mu.Lock()
	defer w.u.mu.Unlock()
	return w.u.out.Write(p)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// binary builds this command once per test binary.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "testenv-cmd-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "testenv")
		out, err := exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// startUp runs `testenv up args...` and waits until it has written its
// kubeconfig (it does once everything is ready).
func startUp(t *testing.T, args ...string) *upProcess {
	t.Helper()
	if _, _, err := testenv.Binaries(); err != nil {
		t.Fatal(err)
	}
	u := &upProcess{kubeconfig: filepath.Join(t.TempDir(), "fed.kubeconfig"), exited: make(chan struct{})}
	u.cmd = exec.Command(binary(t), append([]string{"up", "--kubeconfig", u.kubeconfig}, args...)...)
	u.cmd.Stdout, u.cmd.Stderr = lockedWriter{u}, lockedWriter{u}
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = u.cmd.Wait(); close(u.exited) }()
	t.Cleanup(func() {
		_ = u.cmd.Process.Kill()
		<-u.exited
		if t.Failed() {
			t.Logf("testenv up output:\n%s", u.output())
		}
	})
	err := testenv.WaitFor(context.Background(), 4*time.Minute, func(context.Context) error {
		select {
		case <-u.exited:
			return fmt.Errorf("testenv up exited: %v", u.cmd.ProcessState)
		default:
		}
		if !strings.Contains(u.output(), "\nup; interrupt") {
			return errors.New("not up yet")
		}
		_, err := os.Stat(u.kubeconfig)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var pidRE = regexp.MustCompile(`(?m)^(\S+)\s+pid (\d+)\s`)

// pids returns the processes `up` said it runs, by name.
func (u *upProcess) pids(t *testing.T) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, g := range pidRE.FindAllStringSubmatch(u.output(), -1) {
		pid, err := strconv.Atoi(g[2])
		if err != nil || pid <= 0 {
			t.Fatalf("process %s: pid %q", g[1], g[2])
		}
		m[g[1]] = pid
	}
	return m
}

// alive reports whether pid is a live process (a zombie waiting to be
// reaped counts as gone: it runs nothing and holds no port).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func waitGone(t *testing.T, pids map[string]int) {
	t.Helper()
	err := testenv.WaitFor(context.Background(), 30*time.Second, func(context.Context) error {
		var left []string
		for name, pid := range pids {
			if alive(pid) {
				left = append(left, fmt.Sprintf("%s (pid %d)", name, pid))
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("still running: %s", strings.Join(left, ", "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// `testenv up` serves every cluster under a context of its name, with the
// MCS v1beta1 API installed and an agent joined, and on SIGTERM stops every
// process it started and removes its kubeconfig and files.
func TestUpServesAContextPerClusterAndStopsEverythingOnSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fed")
	u := startUp(t, "--clusters", "2", "--hub-servers", "1", "--no-gateways", "--dir", dir)
	pids := u.pids(t)
	for _, want := range []string{"c1/etcd", "c1/kube-apiserver", "c1/agent", "c2/etcd", "c2/kube-apiserver", "c2/agent", "hub/s0"} {
		if pid, ok := pids[want]; !ok || !alive(pid) {
			t.Errorf("process %s: pid %d listed %v, want it listed and running", want, pid, ok)
		}
	}
	raw, err := clientcmd.LoadFromFile(u.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if raw.CurrentContext != "c1" || len(raw.Contexts) != 2 {
		t.Fatalf("kubeconfig contexts %v (current %q), want c1 and c2 with c1 current", raw.Contexts, raw.CurrentContext)
	}
	ctx := context.Background()
	for _, name := range []string{"c1", "c2"} {
		cfg, err := clientcmd.NewNonInteractiveClientConfig(*raw, name, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("context %s: %v", name, err)
		}
		mc, err := mcsclient.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mc.MulticlusterV1beta1().ServiceExports("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("context %s: v1beta1 ServiceExports: %v", name, err)
		}
	}

	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.exited:
	case <-time.After(time.Minute):
		t.Fatal("testenv up did not exit within a minute of SIGTERM")
	}
	if !u.cmd.ProcessState.Success() {
		t.Errorf("testenv up exited with %v after SIGTERM, want 0", u.cmd.ProcessState)
	}
	waitGone(t, pids)
	if _, err := os.Stat(u.kubeconfig); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kubeconfig after stop: %v, want it removed", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("--dir %s after stop: %v, want it kept", dir, err)
	}
}

// Killing `testenv up` outright (SIGKILL, no chance to clean up) leaves no
// process behind: every child dies with it (parent-death signal).
func TestUpKilledLeavesNoOrphans(t *testing.T) {
	u := startUp(t, "--clusters", "1", "--hub-servers", "0")
	pids := u.pids(t)
	if len(pids) != 2 {
		t.Fatalf("processes %v, want the cluster's etcd and kube-apiserver", pids)
	}
	if err := u.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-u.exited
	waitGone(t, pids)
}
