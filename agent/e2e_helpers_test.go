package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/testenv"
)

// testLogger logs through t.Log, so logs show only on failure.
func testLogger(t testing.TB, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t: t, prefix: name + ": "}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t      testing.TB
	prefix string
}

func (w tWriter) Write(b []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test ended
	w.t.Log(w.prefix + string(b))
	return len(b), nil
}

// adminClient dials the hub as its operator.
func adminClient(t testing.TB, fed *testenv.Federation) fedv1.AdminClient {
	t.Helper()
	path, err := fed.Hub().AdminConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return fedv1.NewAdminClient(conn)
}

func createToken(t testing.TB, admin fedv1.AdminClient, cluster string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetToken()
}

// runningAgent is an agent run in-process until stopped.
type runningAgent struct {
	a      *Agent
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels the agent and waits for Run to return; it may be called
// more than once.
func (r *runningAgent) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	if r.err != nil {
		t.Errorf("agent Run: %v", r.err)
	}
}

// waitRemoved waits until Run returns because the agent's cluster was
// removed from the federation, and fails the test if it returns otherwise
// or not within timeout.
func (r *runningAgent) waitRemoved(t testing.TB, timeout time.Duration) {
	t.Helper()
	var err error
	r.once.Do(func() {
		select {
		case err = <-r.done:
		case <-time.After(timeout):
			r.cancel()
			err = fmt.Errorf("still running %v after its cluster was removed (then %v)", timeout, <-r.done)
		}
		r.cancel()
	})
	if !errors.Is(err, ErrClusterRemoved) {
		t.Errorf("agent Run: %v, want ErrClusterRemoved", err)
	}
}

func startAgent(t testing.TB, cfg Config) *runningAgent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func fileConfig(t testing.TB, cluster, region, zone, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Cluster = federation.MustClusterName(cluster)
	loc, err := federation.NewLocality(region, zone, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Locality = loc
	cfg.DataDir = dir
	cfg.Source = SourceFile
	cfg.SourcePath = filepath.Join(dir, "catalog.yaml")
	cfg.FilePollInterval = 20 * time.Millisecond
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GatewayAPIAddr = "127.0.0.1:0"
	cfg.ReconnectMin = 20 * time.Millisecond
	cfg.ReconnectMax = 500 * time.Millisecond
	cfg.Log = testLogger(t, cluster)
	return cfg
}

func writeCatalog(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitState polls the agent's state until cond returns nil.
func waitState(t testing.TB, a *Agent, timeout time.Duration, cond func(State) error) State {
	t.Helper()
	var last State
	err := testenv.WaitFor(context.Background(), timeout, func(context.Context) error {
		last = a.State()
		return cond(last)
	})
	if err != nil {
		b, _ := json.MarshalIndent(last, "", "  ")
		t.Fatalf("%v\nlast state: %s", err, b)
	}
	return last
}

func findImport(st State, key string) *importPlan {
	for _, p := range st.Imports {
		if p.Key == key {
			return p
		}
	}
	return nil
}

func hasImportFrom(key, cluster string) func(State) error {
	return func(st State) error {
		p := findImport(st, key)
		if p == nil {
			return fmt.Errorf("no import %s", key)
		}
		for _, c := range p.Clusters {
			if c.Cluster == cluster {
				return nil
			}
		}
		return fmt.Errorf("import %s has no cluster %s", key, cluster)
	}
}

func connected(st State) error {
	if !st.Hub.Connected {
		return errors.New("not connected")
	}
	return nil
}

// eastWest is the federation most kube e2e tests run in: a hub of
// hubServers and two real kube-apiservers, east (us-east-1a) and west
// (us-west-1a), with the MCS CRDs installed and no agents (the test runs
// them).
type eastWest struct {
	fed        *testenv.Federation
	admin      fedv1.AdminClient
	east, west *testenv.ClusterEnv
	emc, wmc   mcsclient.Interface
	ekc, wkc   kubernetes.Interface
}

func startEastWest(t testing.TB, hubServers int) *eastWest {
	t.Helper()
	fed := testenv.Start(t, testenv.Options{
		HubServers: hubServers,
		NoAgents:   true,
		Clusters: []testenv.Cluster{
			{Name: "east", Region: "us-east", Zone: "us-east-1a"},
			{Name: "west", Region: "us-west", Zone: "us-west-1a"},
		},
	})
	east, west := fed.Cluster("east"), fed.Cluster("west")
	return &eastWest{
		fed: fed, admin: adminClient(t, fed), east: east, west: west,
		emc: installCRDs(t, east), wmc: installCRDs(t, west),
		ekc: east.Clientset(), wkc: west.Clientset(),
	}
}
