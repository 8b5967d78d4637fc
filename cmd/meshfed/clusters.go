package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func newClustersCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clusters",
		Short: "List, describe and remove member clusters",
	}
	cmd.AddCommand(newClustersListCmd(d), newClustersDescribeCmd(d), newClustersRemoveCmd(d))
	return cmd
}

func newClustersListCmd(d deps) *cobra.Command {
	return newReadCmd(d, "list", "List the member clusters",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.ListClustersResponse, error) {
			return c.ListClusters(ctx, &fedv1.ListClustersRequest{})
		}, clustersTable)
}

func clustersTable(w io.Writer, r *fedv1.ListClustersResponse) {
	row(w, "NAME", "TRUST DOMAIN", "REGION", "ZONE", "STATUS", "GATEWAYS", "JOINED")
	for _, c := range r.GetClusters() {
		row(w, c.GetName(), c.GetTrustDomain(), c.GetLocality().GetRegion(), c.GetLocality().GetZone(),
			c.GetStatus(), list(c.GetGatewayAddresses()), fmtTime(c.GetJoinedAtMs()))
	}
}

func newClustersDescribeCmd(d deps) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
	)
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a cluster, its exported services and its trust bundle",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			name, err := federation.ParseClusterName(args[0])
			if err != nil {
				return usageError(err)
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.DescribeCluster(c.ctx, &fedv1.DescribeClusterRequest{Name: name.String()})
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, resp, func(w io.Writer) { describeClusterTable(w, resp) })
		}),
	}
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

func describeClusterTable(w io.Writer, r *fedv1.DescribeClusterResponse) {
	c := r.GetCluster()
	loc := c.GetLocality()
	caps := c.GetCapabilities()
	kv := func(k, v string) {
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(w, "%s:\t%s\n", k, v)
	}
	kv("name", c.GetName())
	kv("trust domain", c.GetTrustDomain())
	kv("region", loc.GetRegion())
	kv("zone", loc.GetZone())
	kv("subzone", loc.GetSubzone())
	kv("status", c.GetStatus())
	kv("gateways", list(c.GetGatewayAddresses()))
	kv("capabilities", fmt.Sprintf("version %d, features %s", caps.GetVersion(), list(caps.GetFeatures())))
	kv("joined", fmtTime(c.GetJoinedAtMs()))
	kv("last seen", fmtTime(c.GetLastSeenMs()))
	kv("revision", fmt.Sprintf("created %d, modified %d", c.GetCreateRevision(), c.GetModifyRevision()))
	if b := r.GetBundle(); b != nil {
		kv("bundle", fmt.Sprintf("%s, %d authorities, sequence %d", b.GetTrustDomain(), len(b.GetX509Authorities()), b.GetSequenceNumber()))
	} else {
		kv("bundle", "")
	}
	fmt.Fprintf(w, "exports: %d\n", len(r.GetExports()))
	if len(r.GetExports()) == 0 {
		return
	}
	row(w, "SERVICE", "PORTS", "READY")
	for _, e := range r.GetExports() {
		s := e.GetService()
		row(w, s.GetNamespace()+"/"+s.GetName(), ports(s.GetPorts()), strconv.FormatUint(uint64(readyCount(s)), 10))
	}
}

// ports formats ports as port/PROTOCOL, in order, e.g. "80/HTTP,9090/GRPC".
func ports(ps []*fedv1.ServicePort) string {
	var out []string
	for _, p := range ps {
		out = append(out, portString(p))
	}
	return list(out)
}

func portString(p *fedv1.ServicePort) string {
	s := strconv.FormatUint(uint64(p.GetPort()), 10)
	if p.GetProtocol() != "" {
		s += "/" + strings.ToUpper(p.GetProtocol())
	}
	return s
}

// readyCount sums the ready endpoints of every group of s.
func readyCount(s *fedv1.ExportedService) uint32 {
	var n uint32
	for _, g := range s.GetEndpoints() {
		n += g.GetReady()
	}
	return n
}

func newClustersRemoveCmd(d deps) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a cluster, its exports and its trust bundle from the federation",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			name, err := federation.ParseClusterName(args[0])
			if err != nil {
				return usageError(err)
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.RemoveCluster(c.ctx, &fedv1.RemoveClusterRequest{Name: name.String()})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "cluster %s removed (revision %d)\n", name, resp.GetRevision())
			return err
		}),
	}
	cf.add(cmd)
	return cmd
}
