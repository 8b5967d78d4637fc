package devenv

import "testing"

func TestGaugesReadsUnlabelledMetricsFromTheTextFormat(t *testing.T) {
	body := []byte(`# HELP meshfed_hub_raft_leader 1 if this server is the Raft leader.
# TYPE meshfed_hub_raft_leader gauge
meshfed_hub_raft_leader 1
meshfed_hub_raft_applied_index 1.234e+06
meshfed_hub_raft_applied_index_other 7
go_gc_duration_seconds{quantile="0"} 3
`)
	g := gauges(body, metricLeader, metricApplied)
	if len(g) != 2 || g[metricLeader] != 1 || g[metricApplied] != 1234000 {
		t.Errorf("gauges = %v", g)
	}
}
