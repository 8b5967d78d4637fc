package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/requestid"
)

// Environment variables read by the client commands and the hub command.
const (
	envConfig     = "MESHFED_CONFIG"
	envEncryptKey = "MESHFED_ENCRYPT_KEY"
)

// defaultTimeout bounds one Admin call.
const defaultTimeout = 10 * time.Second

// clientFlags are the flags every command that calls the Admin API takes.
type clientFlags struct {
	config  string
	timeout time.Duration
}

func (f *clientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.config, "config", "", "client config file (default $"+envConfig+", else ~/.meshfed/config)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", defaultTimeout, "deadline for the call to the hub")
}

// adminCall is an open connection to the hub and the context for one call.
type adminCall struct {
	ctx    context.Context
	client fedv1.AdminClient
	done   func()
}

// dial resolves the config path, checks the flags and connects. The caller
// must call done.
func (f *clientFlags) dial(cmd *cobra.Command, d deps) (*adminCall, error) {
	if f.timeout <= 0 {
		return nil, usageErrorf("--timeout: %v must be positive", f.timeout)
	}
	path, err := configPath(f.config, d.getenv)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	client, closeConn, err := d.dialAdmin(ctx, path)
	if err != nil {
		cancel()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (pass --config or set %s; a hub writes admin.yaml into its data directory)", err, envConfig)
		}
		return nil, err
	}
	done := func() {
		cancel()
		_ = closeConn() // closing a client connection reports nothing actionable
	}
	return &adminCall{ctx: ctx, client: client, done: done}, nil
}

// configPath picks the client config file: the flag, else $MESHFED_CONFIG,
// else ~/.meshfed/config.
func configPath(flag string, getenv func(string) string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p := getenv(envConfig); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", usageErrorf("no --config, no $%s, and %w", envConfig, err)
	}
	return filepath.Join(home, ".meshfed", "config"), nil
}

// dialAdmin loads the client config at path and dials the hubs it names.
// Reads are retried on Unavailable by the connection's service config;
// writes by requestid.RetryWrites, each call under one request ID, so
// that the hub applies a retried write once.
func dialAdmin(ctx context.Context, path string) (fedv1.AdminClient, func() error, error) {
	cfg, err := clientconfig.Load(path)
	if err != nil {
		return nil, nil, err
	}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		return nil, nil, err
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg, grpc.WithChainUnaryInterceptor(requestid.RetryWrites(requestid.AdminWrites, requestid.DefaultRetryPolicy())))
	if err != nil {
		return nil, nil, err
	}
	return fedv1.NewAdminClient(conn), conn.Close, nil
}

// newReadCmd builds a command that makes one Admin read call and prints the
// response as a table, JSON or YAML (-o).
func newReadCmd[R any](d deps, use, short string, call func(context.Context, fedv1.AdminClient) (R, error), table func(io.Writer, R)) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
	)
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := call(c.ctx, c.client)
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, resp, func(w io.Writer) { table(w, resp) })
		}),
	}
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}
