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
	"time"

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

` + indent(policy.ExampleReviews, "  ") + `
There is one policy per host: the hub refuses a second one and names the first.`,
	}
	cmd.AddCommand(newPolicyGetCmd(d), newPolicyDeleteCmd(d), newPolicyApplyCmd(d), newPolicyDiffCmd(d), newPolicyStatusCmd(d))
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
// apply reads the files and sends their policies in one ApplyPolicies
// (dryRun: a diff), returning the answer with the policies and where each
// was read.
func (f *policyFiles) apply(cmd *cobra.Command, d deps, cf *clientFlags, dryRun bool) (*fedv1.ApplyPoliciesResponse, []*fedv1.TrafficPolicy, []policySource, error) {
	ps, srcs, err := f.read(cmd.InOrStdin())
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := cf.dial(cmd, d)
	if err != nil {
		return nil, nil, nil, err
	}
	defer c.done()
	resp, err := applyPolicies(c, ps, srcs, dryRun)
	return resp, ps, srcs, err
}

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
			resp, _, _, err := files.apply(cmd, d, &cf, false)
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
unchanged; a line diff of its YAML, stored (-) against the file's (+); the
clusters it touches: those that export its service, and those that import it
(every member, while any cluster exports it); and the gateway replicas of those
clusters, as they last reported (see policy status). The exit status is 0
whether or not anything would change.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			resp, ps, srcs, err := files.apply(cmd, d, &cf, true)
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
		fmt.Fprintf(w, "  gateways: %s\n", strings.Join(gatewayNames(r.GetGateways()), ", "))
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

// gatewayNames lists the gateway replicas of a dry run's touched clusters
// as cluster/instance, and a cluster without reports as "cluster (none
// reported)".
func gatewayNames(cgs []*fedv1.ClusterGateways) []string {
	var out []string
	for _, cg := range cgs {
		if len(cg.GetInstances()) == 0 {
			out = append(out, cg.GetCluster()+" (none reported)")
			continue
		}
		for _, inst := range cg.GetInstances() {
			out = append(out, cg.GetCluster()+"/"+inst)
		}
	}
	return out
}

func newPolicyStatusCmd(d deps) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
	)
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show which revision of each policy every gateway replica enforces",
		Long: `Show, for every traffic policy (or NAME), each member cluster and each of its
gateway replicas, what the replica last reported through its cluster's agent:
REVISION in force (- for none: the policy has not reached it, or none of its
revisions compiled there), CURRENT (yes when that is the policy's latest
revision), REJECTED and ERROR (the latest revision it refused, and why; the
last good one stays in force), and AGE (since the hub recorded the report).

A cluster's leading agent forwards a change at once and restates an unchanged
report every 5 minutes, so a live replica's AGE stays under that while the
agent is connected; a replica that stopped reporting is kept 15 minutes, then
dropped. A cluster with no report shows GATEWAY "(no report)". The exit status
is 0 whatever the replicas report.`,
		Args: cobra.MaximumNArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			req := &fedv1.PolicyStatusRequest{}
			if len(args) == 1 {
				req.Name = args[0]
			}
			resp, err := c.client.PolicyStatus(c.ctx, req)
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, resp, func(w io.Writer) { policyStatusTable(w, resp) })
		}),
	}
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

func policyStatusTable(w io.Writer, resp *fedv1.PolicyStatusResponse) {
	row(w, "POLICY", "CLUSTER", "GATEWAY", "REVISION", "CURRENT", "REJECTED", "ERROR", "AGE")
	for _, p := range resp.GetPolicies() {
		for _, g := range p.GetGateways() {
			if g.GetGateway() == "" {
				row(w, p.GetName(), g.GetCluster(), "(no report)", "", "", "", "", "")
				continue
			}
			current := "no"
			if g.GetCurrent() {
				current = "yes"
			}
			row(w, p.GetName(), g.GetCluster(), g.GetGateway(), revisionCell(g.GetRevision()), current,
				revisionCell(g.GetRejectedRevision()), strings.Join(strings.Fields(g.GetError()), " "), age(resp.GetNowMs()-g.GetReportedMs()))
		}
	}
}

// revisionCell is a revision, or "" (printed "-") for none.
func revisionCell(r uint64) string {
	if r == 0 {
		return ""
	}
	return strconv.FormatUint(r, 10)
}

// age formats a duration in milliseconds as kubectl does: 45s, 3m12s,
// 25m, 2h5m, 3d4h.
func age(ms int64) string {
	d := time.Duration(max(ms, 0)) * time.Millisecond
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// indent prefixes every line of text with prefix.
func indent(text, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		b.WriteString(prefix)
		b.WriteString(line)
	}
	return b.String()
}
