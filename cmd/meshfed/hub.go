package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
)

func newHubCmd(d deps) *cobra.Command {
	cfg := hub.DefaultConfig()
	level := logLevel{slog.LevelInfo}
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Run a hub server",
		Long: `Run a hub server until SIGINT or SIGTERM.

The first servers of a new hub are started with --bootstrap-expect N (all with
the same N, at most 7) and --join pointing at each other's gossip ports; later
servers join with --join alone. Servers authenticate each other with
--encrypt-key (from "meshfed hub keygen"; also read from $` + envEncryptKey + `
when the flag is empty).`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if cfg.EncryptKey == "" {
				cfg.EncryptKey = d.getenv(envEncryptKey)
			}
			if err := cfg.Validate(); err != nil {
				return &codedError{code: exitUsage, err: err, lines: unjoin(err)}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level.Level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return d.runHub(ctx, cfg, log)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", cfg.Name, "this server's unique name (a DNS label): its Raft ID and gossip node name")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, snapshots and admin.yaml")
	f.StringVar(&cfg.BindAddr, "bind", cfg.BindAddr, "IP address every port binds to")
	f.IntVar(&cfg.BundlePort, "bundle-port", 0, "port of the SPIFFE bundle endpoint, https_spiffe profile with ID spiffe://<trust-domain>/bundle-endpoint on every server (0 disables)")
	f.IntVar(&cfg.BundleWebPort, "bundle-web-port", 0, "port of the SPIFFE bundle endpoint, https_web profile (0 disables)")
	f.StringVar(&cfg.BundleWebCertFile, "bundle-web-cert", "", "PEM certificate for the https_web bundle endpoint")
	f.StringVar(&cfg.BundleWebKeyFile, "bundle-web-key", "", "PEM key for the https_web bundle endpoint")
	f.StringVar(&cfg.AdvertiseAddr, "advertise", "", "IP address peers, agents and operators use to reach this server (default: --bind)")
	f.IntVar(&cfg.GRPCPort, "grpc-port", cfg.GRPCPort, "port of the gRPC API (agents and admin clients)")
	f.IntVar(&cfg.RaftPort, "raft-port", cfg.RaftPort, "port of Raft traffic between servers")
	f.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "port of gossip between servers (TCP and UDP)")
	f.IntVar(&cfg.HTTPPort, "http-port", cfg.HTTPPort, "port of the HTTP endpoint (health, metrics)")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "servers to wait for before the first election; 0 joins an existing hub")
	f.StringArrayVar(&cfg.Join, "join", cfg.Join, "host:gossip-port of another server to join (repeatable)")
	f.StringVar(&cfg.EncryptKey, "encrypt-key", cfg.EncryptKey, "base64 key shared by all servers, from 'meshfed hub keygen' (default $"+envEncryptKey+")")
	f.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "the hub's SPIFFE trust domain")
	f.DurationVar(&cfg.ServerCertTTL, "server-cert-ttl", cfg.ServerCertTTL, "lifetime of each server's certificate from the hub CA, renewed at half-life (30s to 8760h)")
	f.DurationVar(&cfg.AgentCertTTL, "agent-cert-ttl", cfg.AgentCertTTL, "lifetime of the client certificate an agent gets at join (30s to 8760h)")
	f.DurationVar(&cfg.DeadServerGrace, "dead-server-grace", cfg.DeadServerGrace, "how long a failed server stays a Raft member before it is removed")
	f.BoolVar(&cfg.UIAnonymous, "ui-anonymous", false, "serve the web UI (/ui/ on the HTTP port) without a login, to anyone who reaches the port; logs a warning")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the HTTP port")
	f.StringVar(&cfg.GossipProfile, "gossip-profile", cfg.GossipProfile, "gossip timing: lan, or local for loopback test setups")
	f.Var(&level, "log-level", "log level: debug, info, warn or error")

	cmd.AddCommand(newHubKeygenCmd(d), newHubStatusCmd(d))
	return cmd
}

// runHub constructs a hub server and runs it until ctx is done. A shutdown
// asked for by cancelling ctx is not an error.
func runHub(ctx context.Context, cfg hub.Config, log *slog.Logger) error {
	srv, err := hub.New(cfg, log)
	if err != nil {
		return err
	}
	err = srv.Run(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// unjoin splits an errors.Join result into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// logLevel is the value of --log-level.
type logLevel struct{ slog.Level }

// Set accepts debug, info, warn or error.
func (l *logLevel) Set(s string) error {
	switch s {
	case "debug":
		l.Level = slog.LevelDebug
	case "info":
		l.Level = slog.LevelInfo
	case "warn":
		l.Level = slog.LevelWarn
	case "error":
		l.Level = slog.LevelError
	default:
		return errors.New("must be one of debug, info, warn, error")
	}
	return nil
}

func (l *logLevel) String() string {
	switch l.Level {
	case slog.LevelDebug:
		return "debug"
	case slog.LevelWarn:
		return "warn"
	case slog.LevelError:
		return "error"
	default:
		return "info"
	}
}

// Type names the value in help text.
func (l *logLevel) Type() string { return "level" }

func newHubKeygenCmd(d deps) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new key for --encrypt-key",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			key, err := d.generateKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		}),
	}
}

func newHubStatusCmd(d deps) *cobra.Command {
	return newReadCmd(d, "status", "Show the hub servers, their Raft state and health",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.StatusResponse, error) {
			return c.Status(ctx, &fedv1.StatusRequest{})
		}, statusTable)
}

func statusTable(w io.Writer, r *fedv1.StatusResponse) {
	row(w, "NAME", "STATE", "SUFFRAGE", "HEALTH", "GRPC", "RAFT", "APPLIED")
	for _, s := range r.GetServers() {
		// Only the answering server knows its own applied index.
		applied := "-"
		if s.GetName() == r.GetAnsweredBy() {
			applied = strconv.FormatUint(s.GetAppliedIndex(), 10)
		}
		row(w, s.GetName(), s.GetState(), s.GetSuffrage(), s.GetHealth(), s.GetGrpcAddress(), s.GetRaftAddress(), applied)
	}
	leader := r.GetLeader()
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "leader: %s\n", leader)
	fmt.Fprintf(w, "revision: %d\n", r.GetRevision())
	fmt.Fprintf(w, "answered by: %s\n", r.GetAnsweredBy())
}
