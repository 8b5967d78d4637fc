package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
)

func newTokenCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke one-time join tokens",
	}
	cmd.AddCommand(newTokenCreateCmd(d), newTokenListCmd(d), newTokenRevokeCmd(d))
	return cmd
}

func newTokenCreateCmd(d deps) *cobra.Command {
	var (
		cf      clientFlags
		out     outputFormat
		cluster string
		td      string
		ttl     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --cluster NAME [--trust-domain TD]",
		Short: "Create a one-time token for a cluster to join with",
		Long: `Create a one-time token for a cluster to join with ("meshfed join TOKEN").

The token is bound to the cluster and to the trust domain the cluster must
join with (--trust-domain, default <cluster>.meshfed.local; pass the same to
"meshfed join --trust-domain"). The hub's own trust domain, externally
federated ones and other clusters' are refused.

The token is a secret and is shown only once; "meshfed token list" shows its
id, cluster and state but never the token itself.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			name, err := federation.ParseClusterName(cluster)
			if err != nil {
				return usageErrorf("--cluster: %w", err)
			}
			if ttl < time.Second {
				return usageErrorf("--ttl: %v must be at least 1s", ttl)
			}
			if td != "" {
				if _, err := federation.ParseTrustDomain(td); err != nil {
					return usageErrorf("--trust-domain: %w", err)
				}
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.CreateToken(c.ctx, &fedv1.CreateTokenRequest{
				Cluster:     name.String(),
				TtlSeconds:  int64(ttl / time.Second),
				TrustDomain: td,
			})
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, resp, func(w io.Writer) { createdTokenTable(w, resp) })
		}),
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "name of the cluster that will join with the token (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", hub.DefaultConfig().TokenTTL, "how long the token is valid; the hub bounds it")
	cmd.Flags().StringVar(&td, "trust-domain", "", "the trust domain the cluster must join with (default <cluster>.meshfed.local)")
	_ = cmd.MarkFlagRequired("cluster") // the flag is defined just above
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

// createdTokenTable prints the token alone on the first line, so that
// scripts can take it with head -1, then what identifies it.
func createdTokenTable(w io.Writer, r *fedv1.CreateTokenResponse) {
	fmt.Fprintln(w, r.GetToken())
	info := r.GetInfo()
	fmt.Fprintf(w, "id:\t%s\n", info.GetId())
	fmt.Fprintf(w, "cluster:\t%s\n", info.GetCluster())
	fmt.Fprintf(w, "trust domain:\t%s\n", info.GetTrustDomain())
	fmt.Fprintf(w, "expires:\t%s\n", fmtTime(info.GetExpiresAtMs()))
}

func newTokenListCmd(d deps) *cobra.Command {
	return newReadCmd(d, "list", "List join tokens and their state (never their secrets)",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.ListTokensResponse, error) {
			return c.ListTokens(ctx, &fedv1.ListTokensRequest{})
		}, func(w io.Writer, r *fedv1.ListTokensResponse) { tokensTable(w, r, time.Now()) })
}

func tokensTable(w io.Writer, r *fedv1.ListTokensResponse, now time.Time) {
	row(w, "ID", "CLUSTER", "TRUST DOMAIN", "CREATED", "EXPIRES", "STATE")
	for _, t := range r.GetTokens() {
		row(w, t.GetId(), t.GetCluster(), t.GetTrustDomain(), fmtTime(t.GetCreatedAtMs()), fmtTime(t.GetExpiresAtMs()), tokenState(t, now))
	}
}

// tokenState is revoked, used, expired or active, in that precedence.
func tokenState(t *fedv1.TokenInfo, now time.Time) string {
	switch {
	case t.GetRevoked():
		return "revoked"
	case t.GetUsed():
		return "used"
	case t.GetExpiresAtMs() != 0 && now.UnixMilli() >= t.GetExpiresAtMs():
		return "expired"
	default:
		return "active"
	}
}

func newTokenRevokeCmd(d deps) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token so it can no longer be used",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			if _, err := c.client.RevokeToken(c.ctx, &fedv1.RevokeTokenRequest{Id: args[0]}); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", args[0])
			return err
		}),
	}
	cf.add(cmd)
	return cmd
}
