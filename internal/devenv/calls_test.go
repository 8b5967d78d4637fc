package devenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
)

func TestRunCallsCountsAnswersByClusterAndWritesASecondPerLine(t *testing.T) {
	addr := startWorkload(t, KindHTTP)
	var out bytes.Buffer
	cfg := CallConfig{URL: "http://" + addr + "/", Service: federation.MustServiceKey("default/reviews"),
		Rate: 50, Duration: 1500 * time.Millisecond, Timeout: 2 * time.Second}
	total, err := RunCalls(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	if total.Failed != 0 || total.Calls == 0 || total.Answered["east"] != total.Calls {
		t.Fatalf("total %+v, want every call answered by east", total)
	}
	sum, lines := 0, 0
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var s CallSecond
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if s.Second != lines {
			t.Errorf("line %d says second %d", lines, s.Second)
		}
		lines++
		sum += s.Answered["east"] + s.Failed
	}
	if lines < 2 || sum != total.Calls {
		t.Fatalf("%d lines summing to %d calls, want at least 2 lines summing to %d", lines, sum, total.Calls)
	}
}

func TestRunCallsCountsFailuresWithTheirErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every call is refused
	cfg := CallConfig{URL: "http://" + addr + "/", Service: federation.MustServiceKey("default/reviews"),
		Rate: 20, Duration: 300 * time.Millisecond, Timeout: time.Second}
	total, err := RunCalls(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if total.Calls == 0 || total.Failed != total.Calls || len(total.Errors) == 0 || len(total.Errors) > maxCallErrors {
		t.Fatalf("total %+v, want every call failed, with 1 to %d errors", total, maxCallErrors)
	}
	if !strings.Contains(total.Errors[0], "refused") {
		t.Errorf("error %q, want the refusal", total.Errors[0])
	}
}

func TestCallConfigNamesEveryBadFieldAndItsBound(t *testing.T) {
	err := CallConfig{URL: "ftp://x", Rate: MaxCallRate + 1, Duration: 2 * MaxCallDuration}.Validate()
	var fe *federation.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("%v: no FieldError", err)
	}
	for _, want := range []string{"url", "service", "rate", "1 to 1000", "duration", "at most 1h0m0s", "timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v: does not mention %q", err, want)
		}
	}
}
