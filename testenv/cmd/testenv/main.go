// Command testenv runs a testenv federation from outside Go tests: for
// kubectl, for users' own tests, and for suites that cannot live in this
// module, such as the MCS API project's conformance suite.
//
//	go run ./testenv/cmd/testenv up --clusters 2 --pods --kubeconfig /tmp/fed.kubeconfig
//
// `up` stands up the clusters (etcd and kube-apiserver processes, and with
// --pods kube-scheduler, kube-controller-manager and kwok), a hub, and a
// joined agent and gateway per cluster, exactly as testenv.New does for a
// test. Once everything is ready it writes one kubeconfig with a context
// per cluster (c1, c2, ...), prints what is running, and stays up until
// SIGINT or SIGTERM; then it stops every process, removes its files and the
// kubeconfig. Every process runs in its own process group with a
// parent-death signal, so none outlives the command, even when it is
// killed with SIGKILL.
//
// Run from the meshfed module (it builds cmd/meshfed), or set
// $MESHFED_BINARY. The binaries it needs come from `make testenv-bins`
// (and `make testenv-pod-bins` for --pods); see docs/testing.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshfed/meshfed/testenv"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `usage: testenv up [flags]

Stands up a testenv federation and keeps it up until interrupted.
`

// upConfig is the `up` command's flags.
type upConfig struct {
	Clusters     int
	HubServers   int
	Kubeconfig   string
	Pods         bool
	NoAgents     bool
	NoGateways   bool
	Dir          string
	ReadyTimeout time.Duration
}

// Validate reports every bad flag at once, each naming the flag and its
// bound.
func (c upConfig) Validate() error {
	var errs []error
	if c.Clusters < 1 || c.Clusters > 9 {
		errs = append(errs, fmt.Errorf("--clusters: %d: must be 1 to 9", c.Clusters))
	}
	switch c.HubServers {
	case 0, 1, 3, 5:
	default:
		errs = append(errs, fmt.Errorf("--hub-servers: %d: must be 0, 1, 3 or 5", c.HubServers))
	}
	if c.Kubeconfig == "" {
		errs = append(errs, errors.New("--kubeconfig: required: the file to write the clusters' contexts to"))
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--ready-timeout: %v: must be positive", c.ReadyTimeout))
	}
	return errors.Join(errs...)
}

// options is the federation the flags describe: clusters c1..cN in regions
// region-1..region-N.
func (c upConfig) options() testenv.Options {
	o := testenv.Options{HubServers: c.HubServers, NoAgents: c.NoAgents, NoGateways: c.NoGateways,
		Dir: c.Dir, ReadyTimeout: c.ReadyTimeout, Backend: testenv.BackendProcess}
	for i := 1; i <= c.Clusters; i++ {
		region := fmt.Sprintf("region-%d", i)
		o.Clusters = append(o.Clusters, testenv.Cluster{Name: fmt.Sprintf("c%d", i), Region: region, Zone: region + "a", Pods: c.Pods})
	}
	return o
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "up" {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: the only command is up", errUsage)
	}
	fs := flag.NewFlagSet("testenv up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg upConfig
	fs.IntVar(&cfg.Clusters, "clusters", 2, "member clusters, named c1, c2, ... (1 to 9)")
	fs.IntVar(&cfg.HubServers, "hub-servers", 1, "hub servers (0, 1, 3 or 5); 0 runs no hub and no agents")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "write a kubeconfig with a context per cluster here once everything is ready (required)")
	fs.BoolVar(&cfg.Pods, "pods", false, "run kube-scheduler, kube-controller-manager and kwok in every cluster: Deployments make pods that go Running and Ready")
	fs.BoolVar(&cfg.NoAgents, "no-agents", false, "start no meshfed agents (nor gateways)")
	fs.BoolVar(&cfg.NoGateways, "no-gateways", false, "start no east-west gateways")
	fs.StringVar(&cfg.Dir, "dir", "", "keep every file (data, logs) in this folder, and leave it; default: a temporary folder removed on exit")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 2*time.Minute, "how long each process may take to become ready")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return up(ctx, cfg, stdout)
}

// up runs the federation until ctx ends.
func up(ctx context.Context, cfg upConfig, stdout io.Writer) (err error) {
	kubeconfig, err := filepath.Abs(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "starting %d clusters and %d hub servers...\n", cfg.Clusters, cfg.HubServers)
	start := time.Now()
	fed, err := testenv.New(ctx, cfg.options())
	if err != nil {
		return err
	}
	defer func() {
		_ = os.Remove(kubeconfig)
		if cerr := fed.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		fmt.Fprintln(stdout, "stopped")
	}()
	if err := fed.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	printSummary(stdout, fed, kubeconfig, time.Since(start))
	// A process that dies while the federation is up is reported, not
	// restarted: the user asked for exactly these.
	for _, p := range fed.Processes() {
		go func() {
			select {
			case <-p.Exited():
				fmt.Fprintf(stdout, "%s exited; its log: %s\n", p.Name(), p.LogPath())
			case <-ctx.Done():
			}
		}()
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping...")
	return nil
}

func printSummary(w io.Writer, fed *testenv.Federation, kubeconfig string, took time.Duration) {
	var names []string
	for _, c := range fed.Clusters() {
		names = append(names, c.Name())
	}
	fmt.Fprintf(w, "ready in %v; files in %s\n\n", took.Round(100*time.Millisecond), fed.Dir())
	fmt.Fprintf(w, "kubeconfig: %s (contexts %s)\n", kubeconfig, strings.Join(names, ","))
	fmt.Fprintf(w, "  kubectl --kubeconfig %s --context %s get ns\n", kubeconfig, names[0])
	if h := fed.Hub(); h != nil {
		if admin, err := h.AdminConfig(); err == nil {
			fmt.Fprintf(w, "hub admin config: %s\n  %s clusters list --config %s\n", admin, h.Binary(), admin)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tAPI SERVER\tAGENT HTTP\tPOD NETWORK")
	for i, c := range fed.Clusters() {
		agent, pods := "-", "-"
		if a := c.Agent(); a != nil {
			agent = "http://" + a.HTTPAddr() + "/state"
		}
		if c.Spec().Pods {
			pods = testenv.PodCIDR(i)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name(), c.RESTConfig().Host, agent, pods)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "PROCESS\tPID\tLOG")
	for _, p := range fed.Processes() {
		fmt.Fprintf(tw, "%s\tpid %d\t%s\n", p.Name(), p.Pid(), p.LogPath())
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nup; interrupt (Ctrl-C) or SIGTERM to stop")
}
