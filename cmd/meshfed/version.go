package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// versionInfo is what meshfed version reports.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

func newVersionCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the meshfed version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
			return writeOutput(cmd.OutOrStdout(), out, v, func(w io.Writer) {
				fmt.Fprintf(w, "version:\t%s\n", v.Version)
				fmt.Fprintf(w, "commit:\t%s\n", v.Commit)
				fmt.Fprintf(w, "go:\t%s\n", v.GoVersion)
			})
		}),
	}
	addOutputFlag(cmd, &out)
	return cmd
}
