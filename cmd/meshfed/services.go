package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func newServicesCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "services",
		Short: "Inspect the global services exported by member clusters",
	}
	cmd.AddCommand(newServicesListCmd(d))
	return cmd
}

func newServicesListCmd(d deps) *cobra.Command {
	var (
		cf  clientFlags
		out outputFormat
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List global services, the clusters exporting them and their ready endpoints",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := cf.dial(cmd, d)
			if err != nil {
				return err
			}
			defer c.done()
			resp, err := c.client.ListServices(c.ctx, &fedv1.ListServicesRequest{})
			if err != nil {
				return err
			}
			return writeOutput(cmd.OutOrStdout(), out, resp, func(w io.Writer) { servicesTable(w, resp) })
		}),
	}
	cf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

// servicesTable prints one line per global service. CLUSTERS lists the
// exporting clusters by name, PORTS the distinct ports across their
// exports, READY the ready endpoints per cluster ("east:3 west:2").
func servicesTable(w io.Writer, r *fedv1.ListServicesResponse) {
	row(w, "SERVICE", "CLUSTERS", "PORTS", "READY")
	for _, s := range r.GetServices() {
		exports := slices.Clone(s.GetExports())
		slices.SortStableFunc(exports, func(a, b *fedv1.ExportRecord) int {
			return strings.Compare(a.GetCluster(), b.GetCluster())
		})
		var clusters, ready, portList []string
		seen := map[string]bool{}
		for _, e := range exports {
			clusters = append(clusters, e.GetCluster())
			ready = append(ready, fmt.Sprintf("%s:%d", e.GetCluster(), readyCount(e.GetService())))
			for _, p := range e.GetService().GetPorts() {
				if ps := portString(p); !seen[ps] {
					seen[ps] = true
					portList = append(portList, ps)
				}
			}
		}
		readyCell := strings.Join(ready, " ")
		row(w, s.GetKey(), list(clusters), list(portList), readyCell)
	}
}
