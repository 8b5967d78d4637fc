package eastwest

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// BenchmarkBlackholeShift measures how long a remote gateway whose packets
// are silently dropped (the WAN simulator's partition) stays in
// selection: from the partition until the egress gateway takes it out.
// The budget is ProbeInterval + ProbeFailures × ProbeTimeout (700 ms by
// default). Each iteration partitions, waits, heals and waits for the
// gateway to come back.
func BenchmarkBlackholeShift(b *testing.B) {
	e := startTripleB(b)
	var shifts []time.Duration
	for b.Loop() {
		cut := time.Now()
		e.link.Partition()
		waitFor(b, 10*time.Second, func() error {
			if e.westGW.g.clusterUp(e.east.name) {
				return errors.New("east still selected")
			}
			return nil
		})
		shifts = append(shifts, time.Since(cut))
		e.link.Heal()
		waitFor(b, 10*time.Second, func() error {
			if !e.westGW.g.clusterUp(e.east.name) {
				return errors.New("east not back")
			}
			return nil
		})
	}
	slices.Sort(shifts)
	b.ReportMetric(float64(shifts[len(shifts)/2].Milliseconds()), "ms-shift-p50")
	b.ReportMetric(float64(shifts[len(shifts)-1].Milliseconds()), "ms-shift-max")
}
