package main

import (
	"context"
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
	return newReadCmd(d, "list", "List global services, the clusters exporting them and their ready endpoints",
		func(ctx context.Context, c fedv1.AdminClient) (*fedv1.ListServicesResponse, error) {
			return c.ListServices(ctx, &fedv1.ListServicesRequest{})
		}, servicesTable)
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
