package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
)

func newUICmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "The hub's web UI",
	}
	cmd.AddCommand(newUILoginCmd(d))
	return cmd
}

func newUILoginCmd(d deps) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
		ttl time.Duration
	)
	cmd := &cobra.Command{
		Use:   "login [--ttl D]",
		Short: "Print a URL that logs a browser in to the hub's web UI",
		Long: `Print a URL that logs a browser in to the hub's web UI (/ui/ on the hub's
HTTP port), with the admin credential.

The URL carries a short-lived login token (default 1h, at most 24h) that any
server of the hub accepts; opening it sets a session cookie of the token's
lifetime. The token cannot be revoked before it expires: treat the URL as a
secret. The web UI is read-only.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if ttl < time.Second || ttl > hub.MaxUILoginTTL {
				return usageErrorf("--ttl: %v must be in 1s..%v", ttl, hub.MaxUILoginTTL)
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.CreateUILogin(c.ctx, &fedv1.CreateUILoginRequest{TtlSeconds: int64(ttl / time.Second)})
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, resp, func(w io.Writer) {
				fmt.Fprintln(w, resp.GetUrl())
				fmt.Fprintf(w, "expires:\t%s\n", fmtTime(resp.GetExpiresAtMs()))
			})
		}),
	}
	cmd.Flags().DurationVar(&ttl, "ttl", hub.DefaultUILoginTTL, "how long the login is valid (at most 24h)")
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}
