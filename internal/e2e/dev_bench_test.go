package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/devenv"
)

// devTimeToReady runs `meshfed dev --oneshot` on dir and returns the wall
// time from the start of the process to its "ready in" line, as a user
// sees it, and the time meshfed dev reports in dev.json (from the start of
// its run, so without the process start).
func devTimeToReady(b *testing.B, dir string, base int) (wall, reported time.Duration) {
	b.Helper()
	cmd := exec.Command(binary, "dev", "--oneshot", "--live=false", "--state-dir", dir, "--port-base", strconv.Itoa(base))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if wall == 0 && strings.Contains(sc.Text(), "carries traffic, ready in") {
			wall = time.Since(start)
		}
	}
	if err := cmd.Wait(); err != nil || wall == 0 {
		b.Fatalf("meshfed dev --oneshot: %v, ready line seen: %v\nstdout:\n%s\nstderr:\n%s", err, wall != 0, strings.Join(lines, "\n"), stderr.String())
	}
	f, err := devenv.ReadFile(dir)
	if err != nil {
		b.Fatal(err)
	}
	return wall, time.Duration(f.ReadySeconds * float64(time.Second))
}

// BenchmarkDevTimeToReady measures meshfed dev's time to ready (dev.json
// written, every cluster answering through its gateways) on a fresh state
// directory (cold: the hub bootstraps, the clusters join) and again on the
// same directory (warm: resumed from the data kept), in seconds of wall
// time from the start of the process; the goal is under 3 s.
func BenchmarkDevTimeToReady(b *testing.B) {
	var cold, warm, coldReported, warmReported time.Duration
	for range b.N {
		dir, err := os.MkdirTemp("", "meshfed-dev-bench")
		if err != nil {
			b.Fatal(err)
		}
		base := freeBasePort(b)
		w, r := devTimeToReady(b, dir, base)
		cold, coldReported = cold+w, coldReported+r
		w, r = devTimeToReady(b, dir, base)
		warm, warmReported = warm+w, warmReported+r
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
	}
	n := time.Duration(b.N)
	b.ReportMetric((cold / n).Seconds(), "cold-s")
	b.ReportMetric((warm / n).Seconds(), "warm-s")
	b.ReportMetric((coldReported / n).Seconds(), "cold-reported-s")
	b.ReportMetric((warmReported / n).Seconds(), "warm-reported-s")
	b.ReportMetric(0, "ns/op") // the wall time of a whole iteration means nothing here
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "meshfed dev time to ready: cold %.2fs, warm %.2fs (goal: under 3 s)\n", (cold / n).Seconds(), (warm / n).Seconds())
	}
}
