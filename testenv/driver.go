package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// DriveOption configures [DriveHTTP] and [DriveTCP].
type DriveOption func(*driveConfig)

type driveConfig struct {
	requests    int
	concurrency int
	timeout     time.Duration
	payload     []byte
	newConns    bool
}

// Requests sets how many requests to send (default 100).
func Requests(n int) DriveOption { return func(c *driveConfig) { c.requests = n } }

// Concurrency sets how many requests are in flight at once (default 4).
func Concurrency(n int) DriveOption { return func(c *driveConfig) { c.concurrency = n } }

// RequestTimeout bounds each request (default 5 s).
func RequestTimeout(d time.Duration) DriveOption { return func(c *driveConfig) { c.timeout = d } }

// Payload sets the bytes each TCP request sends and expects echoed (default
// "ping\n").
func Payload(b []byte) DriveOption {
	return func(c *driveConfig) { c.payload = append([]byte(nil), b...) }
}

// NewConnections makes every HTTP request open a new connection (no
// keep-alive). TCP requests always do.
func NewConnections() DriveOption { return func(c *driveConfig) { c.newConns = true } }

// Outcome is what happened to one request.
type Outcome struct {
	Seq     int           // 0-based, in the order requests were issued
	Start   time.Time     // when it was sent
	Latency time.Duration // until it was answered or failed
	Err     error         // nil if it succeeded
	Status  int           // HTTP status (0 for TCP, or when no answer came)
	// Who answered, from the [EchoReply]; also set for an HTTP answer that
	// failed (a 503 from an unhealthy echo server says who it was).
	Cluster  string
	Zone     string
	Instance string
}

// OK reports whether the request succeeded: HTTP 200 with an [EchoReply], or
// a TCP greeting and the payload echoed back intact.
func (o Outcome) OK() bool { return o.Err == nil }

// Result is every request's [Outcome], in Seq order.
type Result struct {
	Outcomes []Outcome
	Elapsed  time.Duration // from the first request to the last answer
}

// Failed returns the outcomes that failed.
func (r *Result) Failed() []Outcome {
	var f []Outcome
	for _, o := range r.Outcomes {
		if !o.OK() {
			f = append(f, o)
		}
	}
	return f
}

// Succeeded counts the outcomes that succeeded.
func (r *Result) Succeeded() int { return len(r.Outcomes) - len(r.Failed()) }

// ByCluster counts successful requests by the cluster that answered.
func (r *Result) ByCluster() map[string]int {
	return r.count(func(o Outcome) string { return o.Cluster })
}

// ByZone counts successful requests by the zone that answered.
func (r *Result) ByZone() map[string]int {
	return r.count(func(o Outcome) string { return o.Zone })
}

// ByInstance counts successful requests by the instance that answered, keyed
// "cluster/instance".
func (r *Result) ByInstance() map[string]int {
	return r.count(func(o Outcome) string { return o.Cluster + "/" + o.Instance })
}

func (r *Result) count(key func(Outcome) string) map[string]int {
	m := map[string]int{}
	for _, o := range r.Outcomes {
		if o.OK() {
			m[key(o)]++
		}
	}
	return m
}

// Percentile returns the p-th percentile (0 to 100, nearest rank) of the
// latencies of the successful requests; 0 if none succeeded.
func (r *Result) Percentile(p float64) time.Duration {
	var lat []time.Duration
	for _, o := range r.Outcomes {
		if o.OK() {
			lat = append(lat, o.Latency)
		}
	}
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	rank := int(math.Ceil(p / 100 * float64(len(lat))))
	return lat[min(max(rank-1, 0), len(lat)-1)]
}

// String summarizes the result, for test logs.
func (r *Result) String() string {
	return fmt.Sprintf("%d requests, %d failed, by cluster %v, p50 %v, p99 %v, in %v",
		len(r.Outcomes), len(r.Failed()), r.ByCluster(), r.Percentile(50), r.Percentile(99), r.Elapsed.Round(time.Millisecond))
}

func driveConfigOf(opts []DriveOption) driveConfig {
	c := driveConfig{requests: 100, concurrency: 4, timeout: 5 * time.Second, payload: []byte("ping\n")}
	for _, o := range opts {
		o(&c)
	}
	c.concurrency = max(1, min(c.concurrency, c.requests))
	return c
}

// DriveHTTP sends GET requests to url and records every outcome. It returns
// when all requests are done, or early when ctx ends (requests not sent by
// then are not in the result).
func DriveHTTP(ctx context.Context, url string, opts ...DriveOption) *Result {
	return driveHTTP(ctx, []string{url}, opts...)
}

// driveHTTP is DriveHTTP over several URLs, request i going to
// urls[i%len(urls)] (round robin, as kube-proxy spreads a Service).
func driveHTTP(ctx context.Context, urls []string, opts ...DriveOption) *Result {
	c := driveConfigOf(opts)
	client := &http.Client{
		Timeout: c.timeout,
		Transport: &http.Transport{
			DisableKeepAlives:   c.newConns,
			MaxIdleConnsPerHost: c.concurrency,
		},
	}
	defer client.CloseIdleConnections()
	return drive(ctx, c, func(ctx context.Context, o *Outcome) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, urls[o.Seq%len(urls)], nil)
		if err != nil {
			o.Err = err
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			o.Err = err
			return
		}
		defer func() { _ = resp.Body.Close() }()
		o.Status = resp.StatusCode
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var rep EchoReply
		if err == nil {
			err = json.Unmarshal(body, &rep)
		}
		o.Cluster, o.Zone, o.Instance = rep.Cluster, rep.Zone, rep.Instance
		switch {
		case resp.StatusCode != http.StatusOK:
			o.Err = fmt.Errorf("HTTP %s", resp.Status)
		case err != nil:
			o.Err = fmt.Errorf("reading echo reply: %w", err)
		}
	})
}

// DriveTCP opens a connection to addr per request, reads the echo server's
// greeting, sends the payload and reads it back, and records every outcome.
// It returns like [DriveHTTP].
func DriveTCP(ctx context.Context, addr string, opts ...DriveOption) *Result {
	return driveTCP(ctx, []string{addr}, opts...)
}

// driveTCP is DriveTCP over several addresses, round robin.
func driveTCP(ctx context.Context, addrs []string, opts ...DriveOption) *Result {
	c := driveConfigOf(opts)
	var d net.Dialer
	return drive(ctx, c, func(ctx context.Context, o *Outcome) {
		conn, err := d.DialContext(ctx, "tcp", addrs[o.Seq%len(addrs)])
		if err != nil {
			o.Err = err
			return
		}
		defer func() { _ = conn.Close() }()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		r := bufio.NewReader(conn)
		rep, err := readEchoGreeting(r)
		if err != nil {
			o.Err = fmt.Errorf("reading greeting: %w", err)
			return
		}
		o.Cluster, o.Zone, o.Instance = rep.Cluster, rep.Zone, rep.Instance
		if _, err := conn.Write(c.payload); err != nil {
			o.Err = err
			return
		}
		got := make([]byte, len(c.payload))
		if _, err := io.ReadFull(r, got); err != nil {
			o.Err = fmt.Errorf("reading echo: %w", err)
			return
		}
		if !bytes.Equal(got, c.payload) {
			o.Err = fmt.Errorf("echo %q, want %q", got, c.payload)
		}
	})
}

func drive(ctx context.Context, c driveConfig, do func(ctx context.Context, o *Outcome)) *Result {
	outcomes := make([]Outcome, c.requests)
	sent := make([]bool, c.requests)
	seqs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range seqs {
				o := &outcomes[seq]
				o.Seq, o.Start = seq, time.Now()
				rctx, cancel := context.WithTimeout(ctx, c.timeout)
				do(rctx, o)
				cancel()
				o.Latency = time.Since(o.Start)
			}
		}()
	}
feed:
	for seq := 0; seq < c.requests; seq++ {
		select {
		case seqs <- seq:
			sent[seq] = true
		case <-ctx.Done():
			break feed
		}
	}
	close(seqs)
	wg.Wait()
	res := &Result{Elapsed: time.Since(start)}
	for i, o := range outcomes {
		if sent[i] {
			res.Outcomes = append(res.Outcomes, o)
		}
	}
	return res
}
