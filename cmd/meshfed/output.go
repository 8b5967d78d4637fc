package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// outputFormat is the value of a command's -o flag. It implements
// pflag.Value, so a bad value is rejected while flags are parsed with a
// message naming the flag and the allowed values.
type outputFormat string

// The output formats.
const (
	formatTable outputFormat = "table"
	formatJSON  outputFormat = "json"
	formatYAML  outputFormat = "yaml"
)

var outputFormats = []outputFormat{formatTable, formatJSON, formatYAML}

func (f *outputFormat) String() string { return string(*f) }

// Type names the value in help text.
func (f *outputFormat) Type() string { return "format" }

// Set accepts one of outputFormats.
func (f *outputFormat) Set(s string) error {
	for _, v := range outputFormats {
		if s == string(v) {
			*f = v
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", joinFormats())
}

func joinFormats() string {
	names := make([]string, len(outputFormats))
	for i, v := range outputFormats {
		names[i] = string(v)
	}
	return strings.Join(names, ", ")
}

// addOutputFlag adds -o/--output to cmd, defaulting to table.
func addOutputFlag(cmd *cobra.Command, f *outputFormat) {
	*f = formatTable
	cmd.Flags().VarP(f, "output", "o", "output format: "+joinFormats())
}

// writeOutput is how every command prints its result. For json and yaml it
// encodes v: a protobuf message with protojson (proto field names, unset
// fields omitted), anything else with encoding/json; yaml is converted from
// that JSON. For table it calls table with a tab-aligned writer: cells are
// separated by '\t' and every line ends in '\n'.
func writeOutput(w io.Writer, f outputFormat, v any, table func(w io.Writer)) error {
	switch f {
	case formatJSON, formatYAML:
		b, err := marshalJSON(v)
		if err != nil {
			return err
		}
		if f == formatYAML {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return fmt.Errorf("yaml: %w", err)
			}
		} else {
			var ind bytes.Buffer
			// Indent re-spaces the whole document, so the output is the same
			// on every run (protojson's own spacing is deliberately unstable).
			if err := json.Indent(&ind, b, "", "  "); err != nil {
				return fmt.Errorf("json: %w", err)
			}
			b = append(ind.Bytes(), '\n')
		}
		_, err = w.Write(b)
		return err
	default:
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		table(tw)
		return tw.Flush()
	}
}

func marshalJSON(v any) ([]byte, error) {
	if m, ok := v.(proto.Message); ok {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("json: %w", err)
		}
		return b, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return b, nil
}

// row writes one table line.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		cells[i] = c
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// fmtTime formats Unix milliseconds as RFC 3339 in UTC; 0 is "-".
func fmtTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// list joins items with commas; none is "-".
func list(items []string) string {
	if len(items) == 0 {
		return "-"
	}
	return strings.Join(items, ",")
}
