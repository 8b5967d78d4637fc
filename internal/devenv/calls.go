package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// CallConfig configures RunCalls: a steady stream of calls to a sample
// workload, as an application in a cluster would make them, for tests that
// run where meshfed dev's live view cannot (a pod in a kind cluster).
type CallConfig struct {
	// URL is called with GET; the answer must be a sample workload's Reply
	// for Service.
	URL     string
	Service federation.ServiceKey
	// Rate is calls a second (1 to MaxCallRate), Duration how long to call
	// (at most MaxCallDuration), Timeout each call's bound.
	Rate     int
	Duration time.Duration
	Timeout  time.Duration
}

// Bounds of CallConfig.
const (
	MaxCallRate     = 1000
	MaxCallDuration = time.Hour
)

// Validate reports every invalid field.
func (c CallConfig) Validate() error {
	var errs []error
	add := func(field, value, reason string) {
		errs = append(errs, &federation.FieldError{Field: field, Value: value, Reason: reason})
	}
	if u, err := url.Parse(c.URL); err != nil || u.Scheme != "http" || u.Host == "" {
		add("url", c.URL, "must be an http:// URL with a host")
	}
	if c.Service.IsZero() {
		add("service", "", "required: namespace/name")
	}
	if c.Rate < 1 || c.Rate > MaxCallRate {
		add("rate", fmt.Sprint(c.Rate), fmt.Sprintf("must be 1 to %d calls a second", MaxCallRate))
	}
	if c.Duration <= 0 || c.Duration > MaxCallDuration {
		add("duration", c.Duration.String(), "must be above 0 and at most "+MaxCallDuration.String())
	}
	if c.Timeout <= 0 || c.Timeout > time.Minute {
		add("timeout", c.Timeout.String(), "must be above 0 and at most 1m0s")
	}
	return errors.Join(errs...)
}

// CallSecond is one second of RunCalls: the calls that ended in it, by the
// cluster that answered, and the failures with their first errors.
type CallSecond struct {
	Second   int            `json:"second"`
	Answered map[string]int `json:"answered"`
	Failed   int            `json:"failed"`
	Errors   []string       `json:"errors,omitempty"` // at most maxCallErrors
}

// CallReport is RunCalls' total.
type CallReport struct {
	Calls    int            `json:"calls"`
	Answered map[string]int `json:"answered"`
	Failed   int            `json:"failed"`
	Errors   []string       `json:"errors,omitempty"` // at most maxCallErrors
}

const maxCallErrors = 5

// RunCalls calls cfg.URL cfg.Rate times a second for cfg.Duration on one
// keep-alive client, writes a JSON CallSecond line to out every second,
// and returns the totals once every call has ended. A call fails when it
// gets no answer within cfg.Timeout, a status other than 200, or a body
// that is not cfg.Service's Reply.
func RunCalls(ctx context.Context, cfg CallConfig, out io.Writer) (CallReport, error) {
	if err := cfg.Validate(); err != nil {
		return CallReport{}, err
	}
	client := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	var (
		mu    sync.Mutex
		sec   = CallSecond{Answered: map[string]int{}}
		total = CallReport{Answered: map[string]int{}}
		calls sync.WaitGroup
	)
	record := func(cluster string, err error) {
		mu.Lock()
		defer mu.Unlock()
		total.Calls++
		if err != nil {
			sec.Failed++
			total.Failed++
			if len(sec.Errors) < maxCallErrors {
				sec.Errors = append(sec.Errors, err.Error())
			}
			if len(total.Errors) < maxCallErrors {
				total.Errors = append(total.Errors, err.Error())
			}
			return
		}
		sec.Answered[cluster]++
		total.Answered[cluster]++
	}
	enc := json.NewEncoder(out)
	flush := func() error {
		mu.Lock()
		s := sec
		sec = CallSecond{Second: s.Second + 1, Answered: map[string]int{}}
		mu.Unlock()
		return enc.Encode(s)
	}
	callEvery := time.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer callEvery.Stop()
	show := time.NewTicker(time.Second)
	defer show.Stop()
	end := time.NewTimer(cfg.Duration)
	defer end.Stop()
	callCtx := context.WithoutCancel(ctx) // a call in flight at the end finishes
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end.C:
			break loop
		case <-callEvery.C:
			calls.Go(func() { record(call(callCtx, client, cfg.URL, cfg.Service)) })
		case <-show.C:
			if err := flush(); err != nil {
				return total, err
			}
		}
	}
	calls.Wait()
	if err := flush(); err != nil {
		return total, err
	}
	slices.Sort(total.Errors)
	return total, ctx.Err()
}

// call makes one GET and returns the cluster that answered.
func call(ctx context.Context, client *http.Client, url string, want federation.ServiceKey) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %.200s", resp.Status, body)
	}
	var r Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return "", err
	}
	if r.Service != want.String() || r.Cluster == "" {
		return "", fmt.Errorf("answered by %q in %q", r.Service, r.Cluster)
	}
	return r.Cluster, nil
}
