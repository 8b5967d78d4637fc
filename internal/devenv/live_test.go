package devenv

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLiveViewLineCountsEachClusterAndFailuresAndKeepsOnlyChanges(t *testing.T) {
	v := newLiveView()
	at := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	for range 3 {
		v.record("east", nil)
	}
	v.record("west", nil)
	line, keep := v.flush(at, nil)
	if want := "15:04:05 central → reviews: east 3, west 1, failed 0"; line != want || !keep {
		t.Errorf("first period: %q, %v; want %q, kept", line, keep, want)
	}
	v.record("east", nil)
	v.record("west", nil)
	if line, keep := v.flush(at, nil); keep || !strings.HasSuffix(line, "east 1, west 1, failed 0") {
		t.Errorf("same clusters answering: %q, keep %v; want the new counts, not kept", line, keep)
	}
	v.record("east", nil)
	v.record("", errors.New("refused"))
	fs := []Failure{{Cluster: "west", What: FaultGateway}}
	line, keep = v.flush(at, fs)
	if want := "15:04:05 central → reviews: east 1, west 0, failed 1  (failed on purpose: west gateway)"; line != want || !keep {
		t.Errorf("west down, a call failed: %q, %v; want %q, kept", line, keep, want)
	}
	v.record("north", nil) // a cluster that does not export reviews: shown all the same
	if line, _ := v.flush(at, fs); !strings.HasSuffix(line, "east 0, west 0, north 1, failed 0  (failed on purpose: west gateway)") {
		t.Errorf("an unexpected cluster: %q", line)
	}
}

func TestConsoleRedrawsTheStatusInPlaceAroundEventsOnATerminal(t *testing.T) {
	var b bytes.Buffer
	c := &console{w: &b, inPlace: true}
	c.Status("s1", false)
	c.Eventf("event")
	c.Status("s2", true)
	c.Status("s3", false)
	c.End()
	want := "s1" + "\r\x1b[K" + "event\n" + "s1" + "\r\x1b[K" + "s2\n" + "s3" + "\n"
	if b.String() != want {
		t.Errorf("terminal output %q, want %q", b.String(), want)
	}
	b.Reset()
	c = &console{w: &b}
	c.Status("s1", false)
	c.Eventf("event")
	c.Status("s2", true)
	c.End()
	if want := "s1\nevent\ns2\n"; b.String() != want {
		t.Errorf("plain output %q, want %q", b.String(), want)
	}
}
