package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/federation/policy/policyfile"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/analyze"
)

// analyzeFormat is the value of analyze's -o flag: text or json.
type analyzeFormat string

func (f *analyzeFormat) String() string { return string(*f) }

// Type names the value in help text.
func (f *analyzeFormat) Type() string { return "format" }

// Set accepts text or json.
func (f *analyzeFormat) Set(s string) error {
	if s != "text" && s != "json" {
		return fmt.Errorf("must be one of text, json")
	}
	*f = analyzeFormat(s)
	return nil
}

func newAnalyzeCmd(d deps) *cobra.Command {
	var (
		cf     clientFlags
		files  []string
		out    = analyzeFormat("text")
		useHub bool
	)
	cmd := &cobra.Command{
		Use:   "analyze [-f FILE]...",
		Short: "Check traffic policies against the live federation (coded messages; exit 1 on errors)",
		Long: `Check global traffic policies against the live federated catalog read from the
hub: member clusters and localities, every cluster's exports with ports and
endpoints, member and federated trust domains. Without -f it checks the
policies the hub stores; a policy given with -f replaces the hub's of the same
name, so a change can be checked before "meshfed policy apply". With
--hub=false it checks the files alone, without the checks that need the catalog.

Each message has a code (docs/analyze.md lists them), a severity, the resource
and the field path. The exit status is 1 if any message is an Error.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if !useHub && len(files) == 0 {
				return usageErrorf("--hub=false needs at least one -f FILE")
			}
			var (
				set analyze.Policies
				cat *analyze.Catalog
			)
			if useHub {
				c, err := cf.dial(cmd, d)
				if err != nil {
					return err
				}
				defer c.done()
				var stored []*fedv1.TrafficPolicy
				if cat, stored, err = analyze.Fetch(c.ctx, c.client); err != nil {
					return err
				}
				set.AddHub(stored)
			}
			for _, f := range files {
				data, err := readAnalyzeFile(cmd.InOrStdin(), f)
				if err != nil {
					return err
				}
				if err := set.AddFile(f, data); err != nil {
					return err
				}
			}
			msgs := set.Analyze(cat)
			if err := writeMessages(cmd.OutOrStdout(), out, msgs); err != nil {
				return err
			}
			if len(msgs) == 0 && out == "text" {
				fmt.Fprintf(cmd.ErrOrStderr(), "no problems found (%s%s)\n", plural(set.Len(), "policy", "policies"), catalogSummary(cat))
			}
			if analyze.HasErrors(msgs) {
				return fmt.Errorf("analyze: %s", tally(msgs))
			}
			return nil
		}),
	}
	cf.add(cmd)
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, `policy file to check, YAML or JSON, several documents allowed ("-" reads stdin); repeatable`)
	cmd.Flags().VarP(&out, "output", "o", "output format: text, json")
	cmd.Flags().BoolVar(&useHub, "hub", true, "read the catalog and stored policies from the hub; false checks the files alone")
	return cmd
}

// readAnalyzeFile reads a policy file, or stdin for "-", up to
// policyfile.MaxFileSize (and one byte more, for policyfile to refuse).
func readAnalyzeFile(stdin io.Reader, path string) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, policyfile.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// writeMessages prints one line per message (text), or a JSON array.
func writeMessages(w io.Writer, f analyzeFormat, msgs []analyze.Message) error {
	if f == "json" {
		if msgs == nil {
			msgs = []analyze.Message{}
		}
		b, err := json.MarshalIndent(msgs, "", "  ")
		if err != nil {
			return fmt.Errorf("json: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.String())
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func catalogSummary(cat *analyze.Catalog) string {
	if cat == nil {
		return ", without the hub's catalog"
	}
	return " against " + plural(len(cat.Clusters), "cluster", "clusters") + " and " + plural(len(cat.Services), "service", "services")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// tally counts messages by severity: "1 error, 2 warnings".
func tally(msgs []analyze.Message) string {
	n := map[analyze.Severity]int{}
	for _, m := range msgs {
		n[m.Severity]++
	}
	var parts []string
	for _, s := range []analyze.Severity{analyze.Error, analyze.Warning, analyze.Info} {
		if n[s] > 0 {
			name := strings.ToLower(s.String())
			parts = append(parts, plural(n[s], name, name+"s"))
		}
	}
	return strings.Join(parts, ", ")
}
