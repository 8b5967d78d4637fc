package devenv

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// printSummary tells the user what runs and how to use it.
func (e *Env) printSummary(took time.Duration) {
	e.mu.Lock()
	f := e.file
	e.mu.Unlock()
	w := &strings.Builder{}
	defer func() { e.console.Print(w.String()) }()
	fmt.Fprintf(w, "\nmeshfed dev: a local federation carries traffic, ready in %.2fs\n", took.Seconds())
	fmt.Fprintf(w, "  state, logs:  %s (logs/), description: %s/%s\n", f.Dir, f.Dir, FileName)
	fmt.Fprintf(w, "  admin config: %s\n", f.Hub.Config)
	var hubs []string
	for _, s := range f.Hub.Servers {
		hubs = append(hubs, fmt.Sprintf("%s %s (pid %d)", s.Name, s.GRPC, s.PID))
	}
	fmt.Fprintf(w, "  hub:          %s\n\n", strings.Join(hubs, ", "))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tLOCALITY\tAGENT (/state)\tGATEWAY (ingress, metrics)\tEGRESS")
	for _, c := range f.Clusters {
		keys := make([]string, 0, len(c.Egress))
		for k := range c.Egress {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var eg []string
		for _, k := range keys {
			eg = append(eg, k+"="+c.Egress[k])
		}
		g := c.Gateways[0]
		fmt.Fprintf(tw, "%s\t%s/%s\t%s (pid %d)\t%s, %s (pid %d)\t%s\n", c.Name, c.Region, c.Zone, c.Agent.HTTP, c.Agent.PID,
			g.Ingress, g.Metrics, g.PID, strings.Join(eg, " "))
	}
	_ = tw.Flush()
	west, east, central := f.cluster("west"), f.cluster("east"), f.cluster("central")
	reviews, ratings := EgressKey(reviews.key, reviews.port), EgressKey(ratings.key, ratings.port)
	fmt.Fprintf(w, `
Try it (from another terminal):

  curl http://%s/      # default/reviews from west: answered by west's own instances
  curl http://%s/      # default/reviews from central: east and west share it
  echo hello | nc -q1 %s   # default/ratings (TCP echo) from east, served by central

  export MESHFED_CONFIG=%s
  bin/meshfed hub status; bin/meshfed clusters list; bin/meshfed services list
  bin/meshfed agent status --agent %s   # central

Failover: make a cluster fail, and watch who answers central's calls to
reviews (the live view, below):

  bin/meshfed dev fail --cluster west --what gateway   # or workloads, agent, hub-link
  bin/meshfed dev heal --cluster west                  # every fault of west ends
%s
A failed process stays down until healed. Any other process that exits
(kill %d, east's gateway) is restarted after %v (doubling up to %v
while it keeps dying); %s follows every pid. Edit a catalog (%s;
ready: false, say) to change what a cluster exports. Ctrl-C stops everything.

`, west.Egress[reviews], central.Egress[reviews], strings.Replace(east.Egress[ratings], ":", " ", 1),
		f.Hub.Config, central.Agent.HTTP, stateDirHint(f.Dir), east.Gateways[0].PID, e.cfg.Restart.Min, e.cfg.Restart.Max, FileName, east.Agent.Catalog)
}

// cluster returns the cluster named name (a zero Cluster if there is none).
func (f *File) cluster(name string) Cluster {
	for _, c := range f.Clusters {
		if c.Name == name {
			return c
		}
	}
	return Cluster{Gateways: []Gateway{{}}}
}

// stateDirHint tells which --state-dir the fail and heal commands need
// when it is not the default.
func stateDirHint(dir string) string {
	if wd, err := os.Getwd(); err == nil && dir == filepath.Join(wd, DefaultConfig().Dir) {
		return ""
	}
	return "  (both with --state-dir " + dir + ")\n"
}
