package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// maxPolicyFileSize bounds a file given to policy apply.
const maxPolicyFileSize = 1 << 20

func newPolicyCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage global traffic policies",
	}
	cmd.AddCommand(newPolicyListCmd(d), newPolicyGetCmd(d), newPolicyDeleteCmd(d), newPolicyApplyCmd(d))
	return cmd
}

func newPolicyListCmd(d deps) *cobra.Command {
	return newReadCmd(d, "list", "List traffic policies",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.ListPoliciesResponse, error) {
			return c.ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
		}, func(w io.Writer, r *fedv1.ListPoliciesResponse) { policiesTable(w, r.GetPolicies()) })
}

func newPolicyGetCmd(d deps) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
	)
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one traffic policy (-o yaml prints a file policy apply accepts)",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.ListPolicies(c.ctx, &fedv1.ListPoliciesRequest{})
			if err != nil {
				return err
			}
			for _, p := range resp.GetPolicies() {
				if p.GetName() == args[0] {
					return writeOutput(cmd.OutOrStdout(), out, p, func(w io.Writer) { policiesTable(w, []*fedv1.TrafficPolicy{p}) })
				}
			}
			return status.Errorf(codes.NotFound, "policy %q not found", args[0])
		}),
	}
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

func policiesTable(w io.Writer, ps []*fedv1.TrafficPolicy) {
	row(w, "NAME", "SERVICE", "REVISION")
	for _, p := range ps {
		row(w, p.GetName(), p.GetService(), strconv.FormatUint(p.GetModifyRevision(), 10))
	}
}

func newPolicyDeleteCmd(d deps) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a traffic policy",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.DeletePolicy(c.ctx, &fedv1.DeletePolicyRequest{Name: args[0]})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "policy %s deleted (revision %d)\n", args[0], resp.GetRevision())
			return err
		}),
	}
	cf.add(cmd)
	return cmd
}

func newPolicyApplyCmd(d deps) *cobra.Command {
	var (
		cf   clientFlags
		file string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or replace a traffic policy from a YAML or JSON file",
		Long: `Create or replace a traffic policy from a YAML or JSON file ("-" reads stdin).

The file is a TrafficPolicy in its protobuf JSON form (field names as in the
proto or in lowerCamelCase); unknown fields are rejected. For example:

  name: reviews-canary
  service: bookinfo/reviews
  subsets:
  - name: v1
    labels: {version: v1}
    weight: 90
  - name: v2
    labels: {version: v2}
    weight: 10
  failover_regions: [us-east, eu-west]`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			p, err := readPolicy(cmd.InOrStdin(), file)
			if err != nil {
				return err
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.PutPolicy(c.ctx, &fedv1.PutPolicyRequest{Policy: p})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "policy %s applied (revision %d)\n", p.GetName(), resp.GetRevision())
			return err
		}),
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "YAML or JSON file with the policy, or - for stdin (required)")
	_ = cmd.MarkFlagRequired("filename") // the flag is defined just above
	cf.add(cmd)
	return cmd
}

// readPolicy reads a TrafficPolicy from the file at path, or from stdin
// when path is "-".
func readPolicy(stdin io.Reader, path string) (*fedv1.TrafficPolicy, error) {
	r := stdin
	name := "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }() // read-only
		r, name = f, path
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPolicyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > maxPolicyFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxPolicyFileSize)
	}
	if strings.TrimSpace(string(b)) == "" {
		return nil, fmt.Errorf("%s: empty", name)
	}
	return parsePolicy(name, b)
}

// parsePolicy decodes a YAML or JSON TrafficPolicy, rejecting unknown fields.
func parsePolicy(name string, b []byte) (*fedv1.TrafficPolicy, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var p fedv1.TrafficPolicy
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(j, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &p, nil
}
