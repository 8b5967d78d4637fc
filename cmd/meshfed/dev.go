package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/devenv"
)

// Environment variables of meshfed dev (make dev); its flags override them.
const (
	envDevDir     = "MESHFED_DEV_DIR"
	envDevPort    = "MESHFED_DEV_PORT"
	envDevOneShot = "MESHFED_DEV_ONESHOT"
)

func newDevCmd(d deps) *cobra.Command {
	cfg := devenv.DefaultConfig()
	level := logLevel{slog.LevelInfo}
	var dir, port, oneshot string
	var live bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local federation that carries traffic (make dev)",
		Long: `Run a local federation as child processes of this binary, on loopback: a
3-server hub and the clusters east (us-east), west (us-west) and central
(eu-central), each with an agent on a file catalog, an east-west gateway and
sample workloads: default/reviews (HTTP, exported by east and west) and
default/ratings (TCP echo, exported by central). Nothing else is needed: no
Kubernetes, no Docker, no repository.

Once every cluster's gateway answers through its egress ports, it writes
<state-dir>/dev.json (pids, addresses, egress ports, the control API) and
prints how to use it. Then the live view shows, every second, which cluster
answers a trickle of calls from central to reviews (on by default when
stdout is a terminal, where it is redrawn in place; --live=false hides it,
--live shows it as a line a second elsewhere).

Failover on demand, from another terminal:

  meshfed dev fail --cluster west --what gateway   # or workloads, agent, hub-link
  meshfed dev heal --cluster west

What fails stays down until healed. Any other child that exits is restarted
after 2s (doubling up to 30s while it keeps dying). SIGINT or SIGTERM stops
everything, with no process left. The state directory is kept: running it
again resumes the same federation; remove it (make clean) to start over.

Environment: $` + envDevDir + ` (--state-dir), $` + envDevPort + ` (--port-base),
$` + envDevOneShot + `=1 (--oneshot).`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var errs []error
			for _, a := range [][2]string{{"state-dir", "dir"}, {"port-base", "base-port"}} {
				if cmd.Flags().Changed(a[0]) && cmd.Flags().Changed(a[1]) {
					errs = append(errs, &federation.FieldError{Field: a[1], Reason: "is the deprecated name of --" + a[0] + ": give one of them"})
				}
			}
			cfg.Dir = devStateDir(d, dir)
			if port == "" {
				port = d.getenv(envDevPort)
			}
			if port != "" {
				p, err := strconv.Atoi(port)
				if err != nil {
					errs = append(errs, &federation.FieldError{Field: "port-base (" + envDevPort + ")", Value: port, Reason: "must be a port number"})
				}
				cfg.BasePort = p
			}
			if oneshot == "" {
				oneshot = d.getenv(envDevOneShot)
			}
			cfg.OneShot = oneshot == "1" || oneshot == "true"
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary = bin
			cfg.EncryptKeyEnv = envEncryptKey
			cfg.Out = cmd.OutOrStdout()
			cfg.LogOut, cfg.LogLevel = cmd.ErrOrStderr(), level.Level
			// The live view: on by default on a terminal, where it is
			// redrawn in place; --live elsewhere writes a line a second.
			tty := isTerminal(cfg.Out)
			cfg.Live, cfg.LiveInPlace = tty, tty
			if cmd.Flags().Changed("live") {
				cfg.Live = live
			}
			if err := errors.Join(append(errs, cfg.Validate())...); err != nil {
				return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
			}
			env, err := devenv.New(cfg, devenv.Deps{
				GenerateKey: d.generateKey,
				CreateToken: func(ctx context.Context, adminConfig string, cluster federation.ClusterName) (string, error) {
					c, done, err := d.dialAdmin(ctx, adminConfig)
					if err != nil {
						return "", err
					}
					defer func() { _ = done() }()
					resp, err := c.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: cluster.String(), TtlSeconds: int64(time.Hour / time.Second)})
					return resp.GetToken(), err
				},
			})
			if err != nil {
				return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := env.Run(ctx); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted before the federation was ready: %w", err)
				}
				return err
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&dir, "state-dir", "", "state directory: data, logs, dev.json (default $"+envDevDir+" or .dev)")
	f.StringVar(&port, "port-base", "", fmt.Sprintf("first port of the plan, which uses %d ports from it (default $%s or %d)", devenv.PortSpan, envDevPort, devenv.DefaultBasePort))
	// The names before issue 13, kept working.
	f.StringVar(&dir, "dir", "", "state directory")
	f.StringVar(&port, "base-port", "", "first port of the plan")
	_ = f.MarkDeprecated("dir", "use --state-dir")
	_ = f.MarkDeprecated("base-port", "use --port-base")
	f.StringVar(&oneshot, "oneshot", "", "1: stop once dev.json is written and verified, a smoke test (default $"+envDevOneShot+")")
	f.Lookup("oneshot").NoOptDefVal = "1"
	f.BoolVar(&live, "live", false, "show live which cluster answers a trickle of calls from central to reviews (default: on when stdout is a terminal)")
	f.IntVar(&cfg.LiveRate, "live-rate", cfg.LiveRate, "calls a second of the live view")
	f.DurationVar(&cfg.ReadyTimeout, "ready-timeout", cfg.ReadyTimeout, "how long the start may take")
	f.Var(&level, "log-level", "log level: debug, info, warn or error")
	cmd.AddCommand(newDevWorkloadCmd(), newDevCallCmd(), newDevFailCmd(d), newDevHealCmd(d))
	return cmd
}

// devStateDir is the state directory of dev, fail and heal: the flag, else
// $MESHFED_DEV_DIR, else .dev.
func devStateDir(d deps, flag string) string {
	if flag != "" {
		return flag
	}
	if dir := d.getenv(envDevDir); dir != "" {
		return dir
	}
	return devenv.DefaultConfig().Dir
}

// devControl parses --cluster and --what (each optional when allowEmpty)
// and connects to the meshfed dev running on the state directory.
func devControl(d deps, dir, cluster, what string, allowEmpty bool) (*devenv.ControlClient, federation.ClusterName, devenv.Fault, error) {
	var errs []error
	var c federation.ClusterName
	var f devenv.Fault
	if cluster != "" || !allowEmpty {
		var err error
		c, err = federation.ParseClusterName(cluster)
		errs = append(errs, err)
	}
	if what != "" || !allowEmpty {
		var err error
		f, err = devenv.ParseFault(what)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, c, f, &codedError{code: exitUsage, err: err, lines: unjoin(err)}
	}
	cc, err := devenv.NewControlClient(devStateDir(d, dir))
	return cc, c, f, err
}

// printFailures prints what a fail or heal changed and what is in force.
func printFailures(cmd *cobra.Command, verb string, rep *devenv.ControlReply) {
	w := cmd.OutOrStdout()
	if len(rep.Changed) == 0 {
		fmt.Fprintf(w, "nothing %s\n", verb)
	}
	for _, f := range rep.Changed {
		fmt.Fprintf(w, "%s %s\n", verb, f)
	}
	if len(rep.Failures) == 0 {
		fmt.Fprintln(w, "failed now: nothing")
		return
	}
	names := make([]string, len(rep.Failures))
	for i, f := range rep.Failures {
		names[i] = f.String()
	}
	fmt.Fprintf(w, "failed now: %s\n", strings.Join(names, ", "))
}

// controlError maps a control API error to an exit code: a rejected field
// is a usage error.
func controlError(err error) error {
	var fe *federation.FieldError
	if errors.As(err, &fe) {
		return &codedError{code: exitUsage, err: err}
	}
	return err
}

var devWhatHelp = "what fails: gateway (killed), workloads (the sample workloads killed), agent (killed) or hub-link (the agent cut off the hub)"

func newDevFailCmd(d deps) *cobra.Command {
	var dir, cluster, what string
	cmd := &cobra.Command{
		Use:   "fail --cluster NAME [--what gateway|workloads|agent|hub-link]",
		Short: "Make part of a cluster of the running meshfed dev fail, until healed",
		Long: `Make part of a cluster of the running meshfed dev fail, for real, and keep it
failed until meshfed dev heal:

  gateway    the cluster's east-west gateway is killed (SIGKILL)
  workloads  its sample workloads are killed (its catalog still lists them
             ready, as Kubernetes does until a readiness probe fails)
  agent      its agent is killed; the gateway keeps its last configuration
  hub-link   its agent is cut off the hub: the relays it reaches the hub
             servers through blackhole every connection (the gateway never
             talks to the hub; the agent keeps serving its cached view)

meshfed dev does not restart what it killed on purpose. It returns once the
fault is in force. The running meshfed dev is found through <state-dir>/dev.json.`,
		Example: "  meshfed dev fail --cluster west --what gateway\n  meshfed dev fail --cluster east --what workloads",
		Args:    cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cc, c, f, err := devControl(d, dir, cluster, what, false)
			if err != nil {
				return err
			}
			rep, err := cc.Fail(cmd.Context(), c, f)
			if err != nil {
				return controlError(err)
			}
			printFailures(cmd, "failed", rep)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "state-dir", "", "state directory of the running meshfed dev (default $"+envDevDir+" or .dev)")
	fl.StringVar(&cluster, "cluster", "", "the cluster: east, west or central")
	fl.StringVar(&what, "what", string(devenv.FaultGateway), devWhatHelp)
	return cmd
}

func newDevHealCmd(d deps) *cobra.Command {
	var dir, cluster, what string
	cmd := &cobra.Command{
		Use:   "heal [--cluster NAME] [--what gateway|workloads|agent|hub-link]",
		Short: "End faults of meshfed dev fail: in one cluster or all, of one kind or all",
		Long: `End faults that meshfed dev fail put into force: every one by default, or
those of one cluster (--cluster) and of one kind (--what). Killed processes
start again at once (not yet ready when it returns); a cut hub link carries
traffic again.`,
		Example: "  meshfed dev heal --cluster west\n  meshfed dev heal",
		Args:    cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cc, c, f, err := devControl(d, dir, cluster, what, true)
			if err != nil {
				return err
			}
			rep, err := cc.Heal(cmd.Context(), c, f)
			if err != nil {
				return controlError(err)
			}
			printFailures(cmd, "healed", rep)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "state-dir", "", "state directory of the running meshfed dev (default $"+envDevDir+" or .dev)")
	fl.StringVar(&cluster, "cluster", "", "only this cluster's faults (default: every cluster)")
	fl.StringVar(&what, "what", "", "only this kind of fault (default: every kind): gateway, workloads, agent or hub-link")
	return cmd
}

// newDevWorkloadCmd is the sample workload meshfed dev runs (hidden).
func newDevWorkloadCmd() *cobra.Command {
	var kind, listen, service, cluster, zone, instance string
	cmd := &cobra.Command{
		Use:    "workload --kind http|tcp --listen HOST:PORT --service NS/NAME --cluster NAME --zone Z --instance NAME",
		Short:  "Serve a sample workload: JSON over HTTP naming itself, or a TCP echo",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var errs []error
			k, err := devenv.ParseWorkloadKind(kind)
			errs = append(errs, err)
			svc, err := federation.ParseServiceKey(service)
			errs = append(errs, err)
			c, err := federation.ParseClusterName(cluster)
			errs = append(errs, err)
			wc := devenv.WorkloadConfig{Kind: k, Listen: listen, Service: svc, Cluster: c, Zone: zone, Instance: instance,
				Log: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))}
			if err := errors.Join(errs...); err != nil {
				return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
			}
			if err := wc.Validate(); err != nil {
				return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return devenv.RunWorkload(ctx, wc)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&kind, "kind", "http", "http (JSON naming the instance) or tcp (echo)")
	f.StringVar(&listen, "listen", "", "host:port to serve on")
	f.StringVar(&service, "service", "", "the service this instance serves (namespace/name)")
	f.StringVar(&cluster, "cluster", "", "the cluster it runs in")
	f.StringVar(&zone, "zone", "", "the zone it runs in")
	f.StringVar(&instance, "instance", "", "this instance's name")
	return cmd
}

// newDevCallCmd calls a sample workload at a steady rate (hidden): the
// client of the kind end-to-end stories, run as a pod.
func newDevCallCmd() *cobra.Command {
	var cfg devenv.CallConfig
	var service string
	cmd := &cobra.Command{
		Use:    "call --url URL --service NS/NAME [--rate N] [--duration D]",
		Short:  "Call a sample workload at a steady rate; a JSON line a second, then the totals (also on SIGTERM)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			svc, err := federation.ParseServiceKey(service)
			if err == nil {
				cfg.Service = svc
				err = cfg.Validate()
			}
			if err != nil {
				return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Stopped by a signal, it still prints the totals of the calls
			// it made.
			total, err := devenv.RunCalls(ctx, cfg, cmd.OutOrStdout())
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			if err := enc.Encode(map[string]devenv.CallReport{"total": total}); err != nil {
				return err
			}
			if total.Failed > 0 {
				return fmt.Errorf("%d of %d calls failed", total.Failed, total.Calls)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.URL, "url", "", "the URL to GET")
	f.StringVar(&service, "service", "default/reviews", "the service that must answer (namespace/name)")
	f.IntVar(&cfg.Rate, "rate", 20, "calls a second")
	f.DurationVar(&cfg.Duration, "duration", time.Minute, "how long to call")
	f.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "each call's bound")
	return cmd
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
