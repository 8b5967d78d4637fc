package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/federation/policy/policyfile"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func newPolicyCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage global traffic policies (GlobalTrafficPolicy)",
		Long: `Manage global traffic policies: GlobalTrafficPolicy documents (see docs/policy.md),
authored once at the hub and enforced by every cluster's gateways. For example:

  apiVersion: meshfed.io/v1alpha1
  kind: GlobalTrafficPolicy
  metadata:
    name: reviews
  spec:
    host: reviews.default
    http:
    - route:
      - destination: {cluster: east}
        weight: 90
      - destination: {cluster: west}
        weight: 10

There is one policy per host: the hub refuses a second one and names the first.`,
	}
	cmd.AddCommand(newPolicyGetCmd(d), newPolicyDeleteCmd(d), newPolicyApplyCmd(d), newPolicyDiffCmd(d))
	return cmd
}

// policyFiles is the -f flag of apply and diff: files of GlobalTrafficPolicy
// documents, "-" for stdin.
type policyFiles []string

func (f *policyFiles) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP((*[]string)(f), "filename", "f", nil, `YAML or JSON file of one or more policies ("---" between documents), or - for stdin; repeatable (required)`)
	_ = cmd.MarkFlagRequired("filename") // the flag is defined just above
}

// policySource says where a policy of a batch was read.
type policySource struct {
	file string
	doc  int // among the file's documents, from 1, as policyfile counts
}

func (s policySource) String() string { return s.file + " document " + strconv.Itoa(s.doc) }

// read decodes every file with policyfile.Decode, all or nothing: on any
// error no policy is returned, and every error found, one line each,
// naming the file, the document and the field path.
func (f policyFiles) read(stdin io.Reader) ([]*fedv1.TrafficPolicy, []policySource, error) {
	var (
		out  []*fedv1.TrafficPolicy
		srcs []policySource
		errs []error
	)
	for _, path := range f {
		name, b, err := readPolicyFile(stdin, path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps, err := policyfile.Decode(b)
		if err != nil {
			for _, e := range flatten(err) {
				for line := range strings.SplitSeq(e.Error(), "\n") {
					errs = append(errs, fmt.Errorf("%s: %s", name, line))
				}
			}
			continue
		}
		for i, p := range ps {
			m, err := policy.ToProto(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", policySource{name, i + 1}, err))
				continue
			}
			out = append(out, m)
			srcs = append(srcs, policySource{name, i + 1})
		}
	}
	if len(errs) > 0 {
		return nil, nil, &codedError{code: exitError, err: errors.Join(errs...), lines: errs}
	}
	return out, srcs, nil
}

// readPolicyFile reads path, or stdin for "-", up to policyfile.MaxFileSize.
func readPolicyFile(stdin io.Reader, path string) (string, []byte, error) {
	r, name := stdin, "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return path, nil, err
		}
		defer func() { _ = f.Close() }() // read-only
		r, name = f, path
	}
	b, err := io.ReadAll(io.LimitReader(r, policyfile.MaxFileSize+1))
	if err != nil {
		return name, nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > policyfile.MaxFileSize {
		return name, nil, fmt.Errorf("%s: larger than %d bytes", name, policyfile.MaxFileSize)
	}
	return name, b, nil
}

// flatten returns the errors joined in err (errors.Join), or err alone.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// applyPolicies sends one ApplyPolicies call for every policy of the
// files. A refusal names policies[i]: when the batch has several, the
// error is followed by which file and document each index is.
func applyPolicies(c *adminCall, ps []*fedv1.TrafficPolicy, srcs []policySource, dryRun bool) (*fedv1.ApplyPoliciesResponse, error) {
	resp, err := c.client.ApplyPolicies(c.ctx, &fedv1.ApplyPoliciesRequest{Policies: ps, DryRun: dryRun})
	if err == nil {
		if len(resp.GetResults()) != len(ps) {
			return nil, fmt.Errorf("hub answered %d results for %d policies", len(resp.GetResults()), len(ps))
		}
		return resp, nil
	}
	st, ok := status.FromError(err)
	if !ok || len(ps) < 2 {
		return nil, err
	}
	lines := []error{fmt.Errorf("%s: %s", st.Code(), st.Message())}
	for i, s := range srcs {
		lines = append(lines, fmt.Errorf("policies[%d] is %s (%s)", i, s, ps[i].GetName()))
	}
	return nil, &codedError{code: exitError, err: err, lines: lines}
}

// action is how a result's action is printed: created, configured,
// unchanged.
func action(a fedv1.PolicyAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "POLICY_ACTION_"))
}

func newPolicyApplyCmd(d deps) *cobra.Command {
	var (
		cf    clientFlags
		files policyFiles
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE...",
		Short: "Create or replace traffic policies from files, all or nothing",
		Long: `Create or replace the traffic policies of one or more files, all or nothing: every
document of every file is decoded strictly (unknown fields are refused, every error
names its file, document and field path) and the hub applies them in one batch, or
none of them. Each policy is reported created, configured or unchanged (the same
document is stored already: nothing is written).`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ps, srcs, err := files.read(cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := applyPolicies(c, ps, srcs, false)
			if err != nil {
				return err
			}
			var out strings.Builder
			for _, r := range resp.GetResults() {
				fmt.Fprintf(&out, "policy/%s %s", r.GetName(), action(r.GetAction()))
				if r.GetAction() != fedv1.PolicyAction_POLICY_ACTION_UNCHANGED {
					fmt.Fprintf(&out, " (revision %d)", resp.GetRevision())
				}
				out.WriteString("\n")
			}
			_, err = io.WriteString(cmd.OutOrStdout(), out.String())
			return err
		}),
	}
	files.add(cmd)
	cf.add(cmd)
	return cmd
}

func newPolicyGetCmd(d deps) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
	)
	cmd := &cobra.Command{
		Use:     "get [NAME]",
		Aliases: []string{"list"},
		Short:   "List traffic policies, or show one (-o yaml prints what policy apply accepts)",
		Long: `Without NAME, list the traffic policies; with NAME, show that one.

-o yaml prints the stored documents as policy apply accepts them ("---" between
several); -o json prints a document, or a JSON array of them.`,
		Args: cobra.MaximumNArgs(1),
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
			ps := resp.GetPolicies()
			if len(args) == 1 {
				i := slices.IndexFunc(ps, func(p *fedv1.TrafficPolicy) bool { return p.GetName() == args[0] })
				if i < 0 {
					return status.Errorf(codes.NotFound, "policy %q not found", args[0])
				}
				ps = ps[i : i+1]
			}
			w := cmd.OutOrStdout()
			switch out {
			case formatYAML:
				return writeDocsYAML(w, ps)
			case formatJSON:
				return writeDocsJSON(w, ps, len(args) == 0)
			}
			return writeOutput(w, out, resp, func(w io.Writer) { policiesTable(w, ps) })
		}),
	}
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

// docYAML is a stored document as YAML.
func docYAML(p *fedv1.TrafficPolicy) ([]byte, error) {
	b, err := yaml.JSONToYAML(p.GetSpec())
	if err != nil {
		return nil, fmt.Errorf("policy %s: stored document: %w", p.GetName(), err)
	}
	return b, nil
}

// writeDocsYAML writes the stored documents, "---" between them.
func writeDocsYAML(w io.Writer, ps []*fedv1.TrafficPolicy) error {
	var buf bytes.Buffer
	for i, p := range ps {
		b, err := docYAML(p)
		if err != nil {
			return err
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// writeDocsJSON writes one stored document indented, or, for a list, a
// JSON array of them.
func writeDocsJSON(w io.Writer, ps []*fedv1.TrafficPolicy, list bool) error {
	var raw []byte
	if list {
		docs := make([]json.RawMessage, len(ps))
		for i, p := range ps {
			docs[i] = p.GetSpec()
		}
		var err error
		if raw, err = json.Marshal(docs); err != nil {
			return fmt.Errorf("json: %w", err)
		}
	} else {
		raw = ps[0].GetSpec()
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	buf.WriteString("\n")
	_, err := w.Write(buf.Bytes())
	return err
}

func policiesTable(w io.Writer, ps []*fedv1.TrafficPolicy) {
	row(w, "NAME", "SERVICE", "CREATED", "REVISION")
	for _, p := range ps {
		row(w, p.GetName(), p.GetService(), strconv.FormatUint(p.GetCreateRevision(), 10), strconv.FormatUint(p.GetModifyRevision(), 10))
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
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "policy/%s deleted (revision %d)\n", args[0], resp.GetRevision())
			return err
		}),
	}
	cf.add(cmd)
	return cmd
}

func newPolicyDiffCmd(d deps) *cobra.Command {
	var (
		cf    clientFlags
		files policyFiles
	)
	cmd := &cobra.Command{
		Use:   "diff -f FILE...",
		Short: "Show what policy apply would change, and which clusters it touches; writes nothing",
		Long: `Show what policy apply -f FILE... would do, writing nothing (a dry run at the
hub, refused as the apply would be): for each policy, created, configured or
unchanged; a line diff of its YAML, stored (-) against the file's (+); and the
clusters it touches: those that export its service, and those that import it
(every member, while any cluster exports it). The exit status is 0 whether or
not anything would change.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ps, srcs, err := files.read(cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := applyPolicies(c, ps, srcs, true)
			if err != nil {
				return err
			}
			var out bytes.Buffer
			for i, r := range resp.GetResults() {
				if err := writePolicyDiff(&out, r, ps[i], srcs[i]); err != nil {
					return err
				}
			}
			_, err = cmd.OutOrStdout().Write(out.Bytes())
			return err
		}),
	}
	files.add(cmd)
	cf.add(cmd)
	return cmd
}

// writePolicyDiff prints one policy of a dry run.
func writePolicyDiff(w *bytes.Buffer, r *fedv1.PolicyApplyResult, p *fedv1.TrafficPolicy, src policySource) error {
	fmt.Fprintf(w, "policy/%s %s (%s, from %s)\n", r.GetName(), action(r.GetAction()), r.GetService(), src)
	if len(r.GetExportingClusters()) == 0 {
		fmt.Fprintf(w, "  clusters: none yet (no cluster exports %s)\n", r.GetService())
	} else {
		fmt.Fprintf(w, "  clusters exporting: %s\n", strings.Join(r.GetExportingClusters(), ", "))
		fmt.Fprintf(w, "  clusters importing: %s\n", strings.Join(r.GetImportingClusters(), ", "))
	}
	if r.GetAction() == fedv1.PolicyAction_POLICY_ACTION_UNCHANGED {
		return nil
	}
	newYAML, err := docYAML(p)
	if err != nil {
		return err
	}
	var oldYAML []byte
	switch {
	case r.GetStoredSpecOmitted():
		fmt.Fprintf(w, "  (the stored document is not shown: the dry run's stored documents passed their size bound; see meshfed policy get %s -o yaml)\n", r.GetName())
		return nil
	case r.GetAction() == fedv1.PolicyAction_POLICY_ACTION_CONFIGURED:
		if oldYAML, err = docYAML(&fedv1.TrafficPolicy{Name: r.GetName(), Spec: r.GetStoredSpec()}); err != nil {
			return err
		}
	}
	stored := "stored"
	if r.GetAction() == fedv1.PolicyAction_POLICY_ACTION_CREATED {
		stored = "not stored"
	}
	fmt.Fprintf(w, "--- policy/%s (%s)\n+++ policy/%s (%s)\n", r.GetName(), stored, r.GetName(), src)
	writeUnifiedDiff(w, splitLines(oldYAML), splitLines(newYAML))
	return nil
}
