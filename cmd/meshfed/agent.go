package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

// agentFlags are the flags join and agent share.
type agentFlags struct {
	cfg      agent.Config
	cluster  string
	region   string
	zone     string
	source   string
	httpPort int
	egress   string
	csIPs    string
	td       string
	level    logLevel
	elect    bool
}

func (f *agentFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "this cluster's name (a DNS label)")
	fl.StringVar(&f.region, "region", "", "this cluster's region")
	fl.StringVar(&f.zone, "zone", "", "this cluster's zone")
	fl.StringVar(&f.source, "source", "kubernetes", `catalog source: "kubernetes" or "file:PATH"`)
	fl.StringVar(&f.cfg.Kubeconfig, "kubeconfig", "", "kubeconfig of the kubernetes source (default: in-cluster)")
	fl.StringVar(&f.cfg.DataDir, "data-dir", "", "directory for credentials (file source), the CA root and the cached hub state")
	fl.IntVar(&f.httpPort, "http-port", 7480, "port of /healthz, /readyz, /metrics and /state on 127.0.0.1 (0: any free port, -1: off)")
	fl.StringVar(&f.cfg.MetricsAddr, "metrics-bind", "", `host:port where /metrics alone is served for Prometheus, e.g. the pod IP ("" turns it off; /state stays on --http-port)`)
	fl.StringVar(&f.cfg.GatewayAddress, "gateway-address", "", "IP address imports point at while no gateway pod (--gateway-selector) is ready (kubernetes source)")
	fl.StringVar(&f.cfg.GatewaySelector, "gateway-selector", agent.DefaultGatewaySelector, "label selector of the gateway pods in the agent's namespace; imports point at every ready one (kubernetes source)")
	fl.StringVar(&f.cfg.GatewayServiceAccount, "gateway-service-account", agent.DefaultGatewayServiceAccount, "ServiceAccount whose tokens authenticate gateways (TokenReview; kubernetes source)")
	fl.StringVar(&f.egress, "egress-ports", fmt.Sprintf("%d-%d", agent.DefaultEgressPortMin, agent.DefaultEgressPortMax), "range of egress ports assigned to imported service ports")
	fl.StringVar(&f.cfg.DNSAddr, "dns-bind", "", `host:port (UDP and TCP) of the clusterset.local DNS server ("" turns it off)`)
	fl.StringVar(&f.csIPs, "clusterset-ips", "", "prefix the file source's imports get their ClusterSetIPs from; the gateways listen on them (e.g. 127.1.0.0/24)")
	fl.StringArrayVar(&f.cfg.GatewayAddresses, "gateway", nil, "host:port of an east-west gateway as remote clusters reach it (repeatable; sent at join)")
	fl.StringArrayVar(&f.cfg.HubAddresses, "hub", nil, "host:port of a hub server to dial instead of the addresses in the token and credentials (repeatable)")
	fl.StringVar(&f.cfg.GatewayAPIAddr, "gateway-api", agent.DefaultGatewayAPIAddr, `host:port of the gateway API (config stream and SVIDs for this cluster's gateways; "" turns it off)`)
	fl.StringVar(&f.td, "trust-domain", "", "this cluster's SPIFFE trust domain, chosen at join (default <cluster>.meshfed.local)")
	fl.DurationVar(&f.cfg.SVIDTTL, "svid-ttl", trust.DefaultSVIDTTL, "lifetime of the SVIDs the cluster CA issues (renewed at half-life)")
	fl.DurationVar(&f.cfg.GatewaySVIDTTL, "gateway-svid-ttl", agent.DefaultGatewaySVIDTTL, "lifetime of the gateways' SVIDs (renewed at half-life: a gateway outlives an agent outage of half of it)")
	fl.StringVar(&f.cfg.GatewayIngressBind, "gateway-ingress-bind", "", "IP address the gateways bind their QUIC ingress to (default all); the port is the one of the first --gateway")
	fl.DurationVar(&f.cfg.BundleRefresh, "bundle-refresh", trust.DefaultRefreshHint, "refresh hint of the cluster's trust bundle; a CA rotation publishes the new root 3 hints before it signs")
	fl.DurationVar(&f.cfg.ClockSkew, "clock-skew", trust.DefaultClockSkew, "clock disagreement the cluster CA tolerates")
	fl.BoolVar(&f.elect, "leader-elect", false, "run as one of several replicas: the holder of the Lease --leader-election-lease writes, the others serve read-only (kubernetes source)")
	fl.StringVar(&f.cfg.LeaderElection.LeaseName, "leader-election-lease", agent.DefaultLeaseName, "name of the Lease (in meshfed-system) the replicas elect a leader with")
	fl.StringVar(&f.cfg.LeaderElection.Identity, "leader-election-id", "", "this replica's identity in the Lease (default: the host name, i.e. the pod name)")
	fl.Var(&f.level, "log-level", "log level: debug, info, warn or error")
}

// build turns the flags into a validated config.
func (f *agentFlags) build(cmd *cobra.Command) (agent.Config, error) {
	var errs []error
	cfg := f.cfg
	if f.cluster != "" {
		c, err := federation.ParseClusterName(f.cluster)
		errs = append(errs, err)
		cfg.Cluster = c
	}
	if f.region != "" || f.zone != "" {
		l, err := federation.NewLocality(f.region, f.zone, "")
		errs = append(errs, err)
		cfg.Locality = l
	}
	if f.td != "" {
		td, err := federation.ParseTrustDomain(f.td)
		errs = append(errs, err)
		cfg.TrustDomain = td
	}
	kind, path, err := agent.ParseSource(f.source)
	errs = append(errs, err)
	cfg.Source, cfg.SourcePath = kind, path
	switch {
	case f.httpPort < 0:
		cfg.HTTPAddr = ""
	case f.httpPort > 65535:
		errs = append(errs, &federation.FieldError{Field: "http-port", Value: strconv.Itoa(f.httpPort), Reason: "must be in 0..65535 or -1"})
	default:
		cfg.HTTPAddr = "127.0.0.1:" + strconv.Itoa(f.httpPort)
	}
	lo, hi, ok := strings.Cut(f.egress, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil {
		errs = append(errs, &federation.FieldError{Field: "egress-ports", Value: f.egress, Reason: "must be MIN-MAX"})
	}
	cfg.EgressPortMin, cfg.EgressPortMax = a, b
	if f.csIPs != "" {
		p, err := netip.ParsePrefix(f.csIPs)
		if err != nil {
			errs = append(errs, &federation.FieldError{Field: "clusterset-ips", Value: f.csIPs, Reason: "must be an IP prefix (address/bits)"})
		}
		cfg.ClusterSetIPs = p
	}
	if !f.elect {
		cfg.LeaderElection.LeaseName = ""
	} else if cfg.LeaderElection.Identity == "" {
		host, err := os.Hostname()
		errs = append(errs, err)
		cfg.LeaderElection.Identity = host
	}
	cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: f.level.Level}))
	if err := errors.Join(errs...); err != nil {
		return cfg, &codedError{code: exitUsage, err: err, lines: unjoin(err)}
	}
	return cfg, nil
}

// validate checks cfg, as a usage error naming every invalid field.
func validate(cfg agent.Config) error {
	if err := cfg.Validate(); err != nil {
		return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
	}
	return nil
}

// withStoredIdentity completes cfg from the stored credentials (the
// cluster name), refusing flags that contradict them, and validates it.
func withStoredIdentity(cfg agent.Config) (agent.Config, error) {
	cfg, err := agent.WithStoredIdentity(cfg)
	if errors.Is(err, agent.ErrIdentityMismatch) {
		return cfg, usageError(err)
	}
	if err != nil {
		return cfg, err
	}
	return cfg, validate(cfg)
}

// runAgent runs the agent until SIGINT or SIGTERM.
func runAgent(cmd *cobra.Command, cfg agent.Config) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	err = a.Run(ctx)
	if errors.Is(err, agent.ErrClusterRemoved) {
		// Exit non-zero: a removed cluster's agent has nothing left to do,
		// and a supervisor should show it rather than restart it quietly
		// (a restart meets the same refusal and exits again).
		return fmt.Errorf("%w\nits imports were removed and the agent stopped; to rejoin, create a token (meshfed token create --cluster %s) and run meshfed join with it", err, cfg.Cluster)
	}
	return err
}

func newJoinCmd() *cobra.Command {
	f := &agentFlags{cfg: agent.DefaultConfig(), level: logLevel{slog.LevelInfo}}
	cmd := &cobra.Command{
		Use:   "join TOKEN --cluster NAME --region R --zone Z --source kubernetes|file:PATH",
		Short: "Join this cluster to the federation with a one-time token, then run the agent",
		Long: `Join this cluster to the federation with a one-time token from
"meshfed token create", then run the agent until SIGINT or SIGTERM.

The hub is authenticated by the CA fingerprint in the token. The issued
credentials are stored in --data-dir (file source) or in Secrets in
meshfed-system (kubernetes source). A refused token changes nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			cfg, err := f.build(cmd)
			if err != nil {
				return err
			}
			if err := validate(cfg); err != nil {
				return err
			}
			// A pod restarted after its join (or a replica that lost the
			// race to join) starts from the stored credentials, as
			// `meshfed agent` does, instead of exiting and crash-looping.
			switch err := agent.Join(cmd.Context(), cfg, args[0]); {
			case errors.Is(err, agent.ErrAlreadyJoined):
				if cfg, err = withStoredIdentity(cfg); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "already joined as cluster %s: starting from the stored credentials (the token is not used)\n", cfg.Cluster)
			case err != nil:
				return err
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "joined the federation as cluster %s\n", cfg.Cluster)
			}
			return runAgent(cmd, cfg)
		}),
	}
	f.add(cmd)
	return cmd
}

func newAgentCmd() *cobra.Command {
	f := &agentFlags{cfg: agent.DefaultConfig(), level: logLevel{slog.LevelInfo}}
	cmd := &cobra.Command{
		Use:   "agent --data-dir D --source kubernetes|file:PATH [--cluster NAME] [--region R --zone Z]",
		Short: "Run the agent of a joined cluster from its stored credentials",
		Long: `Run the agent of a joined cluster from its stored credentials (in --data-dir
with the file source, in Secrets in meshfed-system with the kubernetes source).

The cluster's name and trust domain are the stored ones: --cluster and
--trust-domain may be left out, and are an error when they name others.
--region and --zone, when given, are stated to the hub on every connection,
which records a change; without them the hub keeps its record.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.build(cmd)
			if err != nil {
				return err
			}
			if cfg, err = withStoredIdentity(cfg); err != nil {
				return err
			}
			return runAgent(cmd, cfg)
		}),
	}
	f.add(cmd)
	cmd.AddCommand(newAgentStatusCmd())
	return cmd
}

func newAgentStatusCmd() *cobra.Command {
	var addr string
	out := outputFormat("table")
	cmd := &cobra.Command{
		Use:   "status --agent HOST:PORT",
		Short: "Show an agent's hub connection, exports, imports and clusters",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			st, err := fetchAgentState(cmd.Context(), addr)
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, st, func(w io.Writer) { agentStateTable(w, st) })
		}),
	}
	cmd.Flags().StringVar(&addr, "agent", "127.0.0.1:7480", "host:port of the agent's HTTP endpoint")
	addOutputFlag(cmd, &out)
	return cmd
}

func fetchAgentState(ctx context.Context, addr string) (*agent.State, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/state", nil)
	if err != nil {
		return nil, usageError(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent %s: %s", addr, resp.Status)
	}
	var st agent.State
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("agent %s: %w", addr, err)
	}
	return &st, nil
}

func agentStateTable(w io.Writer, st *agent.State) {
	conn := "disconnected"
	if st.Hub.Connected {
		conn = "connected to " + st.Hub.Server
	}
	if st.Hub.FromCache {
		conn += " (serving the cached state)"
	}
	fmt.Fprintf(w, "CLUSTER\t%s\nTRUST DOMAIN\t%s\nHUB\t%s\nREVISION\t%d\n", st.Cluster, st.TrustDomain, conn, st.Hub.Revision)
	if st.Hub.LastError != "" {
		fmt.Fprintf(w, "LAST ERROR\t%s\n", st.Hub.LastError)
	}
	fmt.Fprintln(w)
	row(w, "EXPORT", "PORTS", "READY", "PUBLISHED", "CONDITION")
	for _, e := range st.Exports {
		cond := e.Error
		if e.Conflict != "" {
			cond = "Conflict: " + e.Conflict
		}
		row(w, e.Key, ports(e.Ports), strconv.Itoa(int(e.Ready)), strconv.FormatBool(e.Published), cond)
	}
	fmt.Fprintln(w)
	row(w, "IMPORT", "PORTS", "EGRESS", "CLUSTERS (ready)")
	for _, p := range st.Imports {
		var cs, eg []string
		for _, c := range p.Clusters {
			cs = append(cs, fmt.Sprintf("%s(%d)", c.Cluster, c.Ready))
		}
		for _, port := range p.Ports {
			if e := p.Egress[port.GetName()]; e != 0 {
				eg = append(eg, strconv.Itoa(e))
			} else {
				eg = append(eg, "-")
			}
		}
		row(w, p.Key, ports(p.Ports), strings.Join(eg, ","), strings.Join(cs, ","))
	}
	fmt.Fprintln(w)
	row(w, "CLUSTER", "LOCALITY", "GATEWAYS")
	for _, c := range st.Clusters {
		row(w, c.Name, c.Region+"/"+c.Zone, strings.Join(c.GatewayAddresses, ","))
	}
	fmt.Fprintln(w)
	row(w, "GATEWAY", "PEER", "SENT", "APPLIED", "HEALTH", "REMOTE UP", "STREAMS", "SINCE")
	for _, g := range st.Gateways {
		applied, health, remote, streams := "-", "unknown", "-", "-"
		if !g.Reported.IsZero() {
			applied = strconv.FormatUint(g.Applied, 10)
			if g.Rejected != "" {
				applied += " (rejected later: " + g.Rejected + ")"
			}
		}
		if h := g.Health; h != nil {
			switch {
			case h.Draining:
				health = "draining"
			case h.Serving:
				health = "serving"
			default:
				health = "not serving"
			}
			if h.Cached {
				health += ", cached config"
			}
			remote = fmt.Sprintf("%d/%d", h.RemoteGatewaysUp, h.RemoteGateways)
			streams = strconv.Itoa(int(h.ActiveStreams))
		}
		row(w, g.Instance, g.Peer, strconv.FormatUint(g.Revision, 10), applied, health, remote, streams, g.Since.UTC().Format(time.RFC3339))
	}
}
