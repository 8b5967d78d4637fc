package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/trust/x509pem"
)

func newTrustCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Trust bundles, CA rotation and federation with external trust domains",
	}
	cmd.AddCommand(newTrustBundlesCmd(d), newTrustRotateCmd(d), newTrustStatusCmd(d), newTrustFederateCmd(d),
		newTrustFederationsCmd(d), newTrustRemoveFederationCmd(d))
	return cmd
}

func newTrustBundlesCmd(d deps) *cobra.Command {
	return newReadCmd(d, "bundles", "List the trust bundles of the federation (one per trust domain, never merged)",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.ListBundlesResponse, error) {
			return c.ListBundles(ctx, &fedv1.ListBundlesRequest{})
		}, bundlesTable)
}

func bundlesTable(w io.Writer, resp *fedv1.ListBundlesResponse) {
	row(w, "TRUST DOMAIN", "OWNER", "AUTHORITIES", "SEQUENCE", "REFRESH", "REVISION")
	for _, b := range resp.GetBundles() {
		owner := b.GetCluster()
		if owner == "" {
			owner = "(external)"
		}
		row(w, b.GetBundle().GetTrustDomain(), owner, strconv.Itoa(len(b.GetBundle().GetX509Authorities())),
			strconv.FormatUint(b.GetBundle().GetSequenceNumber(), 10),
			strconv.FormatInt(b.GetBundle().GetRefreshHintSeconds(), 10)+"s",
			strconv.FormatUint(b.GetModifyRevision(), 10))
	}
}

func newTrustStatusCmd(d deps) *cobra.Command {
	return newReadCmd(d, "status", "Show each cluster's trust bundle and which member clusters have applied it (a CA rotation waits for them)",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.TrustStatusResponse, error) {
			return c.TrustStatus(ctx, &fedv1.TrustStatusRequest{})
		}, trustStatusTable)
}

// trustStatusTable prints one row per cluster and member: the member's
// applied sequence of the cluster's bundle, and whether it holds the
// latest. A member that does not count (not connected, not seen recently)
// never holds a rotation up.
func trustStatusTable(w io.Writer, resp *fedv1.TrustStatusResponse) {
	row(w, "CLUSTER", "TRUST DOMAIN", "ROTATION", "SEQUENCE", "ROOTS", "MEMBER", "APPLIED", "HOLDS LATEST", "COUNTS")
	for _, c := range resp.GetClusters() {
		lead := []string{c.GetCluster(), c.GetTrustDomain(), strconv.FormatUint(c.GetCaRotation(), 10),
			strconv.FormatUint(c.GetSequenceNumber(), 10), strconv.FormatUint(uint64(c.GetRoots()), 10)}
		if len(c.GetMembers()) == 0 {
			row(w, append(lead, "-", "-", "-", "-")...)
		}
		for _, m := range c.GetMembers() {
			row(w, append(lead, m.GetCluster(), strconv.FormatUint(m.GetAppliedSequence(), 10), yesNo(m.GetHolds()), yesNo(m.GetCounted()))...)
		}
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newTrustRotateCmd(d deps) *cobra.Command {
	var (
		cf      clientFlags
		cluster string
	)
	cmd := &cobra.Command{
		Use:   "rotate --cluster NAME",
		Short: "Ask a cluster's agent to rotate its CA (new root published first, old retired last)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if _, err := federation.ParseClusterName(cluster); err != nil {
				return usageErrorf("--cluster: %w", err)
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.RotateCA(c.ctx, &fedv1.RotateCARequest{Cluster: cluster})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rotation %d requested for cluster %s (revision %d)\n", resp.GetCaRotation(), cluster, resp.GetRevision())
			return nil
		}),
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "member cluster whose CA to rotate (required)")
	_ = cmd.MarkFlagRequired("cluster")
	cf.add(cmd)
	return cmd
}

func newTrustFederateCmd(d deps) *cobra.Command {
	var (
		cf         clientFlags
		rel        fedv1.FederationRelationship
		bundleFile string
	)
	cmd := &cobra.Command{
		Use:   "federate --trust-domain TD --url URL --profile https_web|https_spiffe [--endpoint-spiffe-id ID]",
		Short: "Federate with an external trust domain through its SPIFFE bundle endpoint",
		Long: `Federate with an external trust domain (for example a SPIRE deployment).

The trust domain, the bundle endpoint URL and the profile are all explicit, as
the SPIFFE Federation specification requires. With https_spiffe, give the
endpoint's SPIFFE ID, and --endpoint-bundle (PEM CA certificates) to
bootstrap trust in the endpoint's trust domain, e.g. from
"spire-server bundle show".`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if bundleFile != "" {
				pem, err := os.ReadFile(bundleFile)
				if err != nil {
					return usageError(fmt.Errorf("--endpoint-bundle: %w", err))
				}
				certs, err := x509pem.DecodeCerts(pem)
				if err != nil {
					return usageError(fmt.Errorf("--endpoint-bundle: %w", err))
				}
				for _, c := range certs {
					rel.EndpointBootstrapAuthorities = append(rel.EndpointBootstrapAuthorities, c.Raw)
				}
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.PutFederation(c.ctx, &fedv1.PutFederationRequest{Federation: &rel})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "federating with %s via %s (%s), revision %d\n", rel.GetTrustDomain(), rel.GetUrl(), rel.GetProfile(), resp.GetRevision())
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&rel.TrustDomain, "trust-domain", "", "the external trust domain (required)")
	f.StringVar(&rel.Url, "url", "", "https URL of its bundle endpoint (required)")
	f.StringVar(&rel.Profile, "profile", "", "bundle endpoint profile: https_web or https_spiffe (required)")
	f.StringVar(&rel.EndpointSpiffeId, "endpoint-spiffe-id", "", "SPIFFE ID the endpoint presents (https_spiffe)")
	f.StringVar(&bundleFile, "endpoint-bundle", "", "PEM file with the endpoint trust domain's CA certificates (https_spiffe bootstrap)")
	for _, name := range []string{"trust-domain", "url", "profile"} {
		_ = cmd.MarkFlagRequired(name)
	}
	cf.add(cmd)
	return cmd
}

func newTrustFederationsCmd(d deps) *cobra.Command {
	return newReadCmd(d, "federations", "List relationships with external trust domains and their last fetch",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.ListFederationsResponse, error) {
			return c.ListFederations(ctx, &fedv1.ListFederationsRequest{})
		}, func(w io.Writer, resp *fedv1.ListFederationsResponse) {
			row(w, "TRUST DOMAIN", "PROFILE", "URL", "LAST FETCH", "LAST ERROR")
			for _, s := range resp.GetFederations() {
				f := s.GetFederation()
				row(w, f.GetTrustDomain(), f.GetProfile(), f.GetUrl(), fmtTime(s.GetLastFetchMs()), strings.ReplaceAll(s.GetLastError(), "\t", " "))
			}
		})
}

func newTrustRemoveFederationCmd(d deps) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "remove-federation TRUST_DOMAIN",
		Short: "Stop federating with an external trust domain and withdraw its bundle",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.DeleteFederation(c.ctx, &fedv1.DeleteFederationRequest{TrustDomain: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed federation with %s (revision %d)\n", args[0], resp.GetRevision())
			return nil
		}),
	}
	cf.add(cmd)
	return cmd
}
