package gatewayclient

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// cacheWriteInterval bounds how often the config cache is rewritten: a
// busy stream coalesces into one write per interval.
const cacheWriteInterval = time.Second

// maxCacheBytes bounds the cached config read back at start.
const maxCacheBytes = 256 << 20

// loadCache loads the cached SVID (if it has not expired) and the cached
// config (if it parses), so that Run can start serving without the agent.
func (c *Client) loadCache() {
	if b, err := c.svidStore.Load(); err == nil {
		svid, err := ParseSVIDPEM(b)
		switch {
		case err != nil:
			c.log.Warn("cached SVID unreadable; ignoring it", "err", err)
		case svid.ID != c.gwID:
			c.log.Warn("cached SVID is not this cluster's gateway; ignoring it", "id", svid.ID)
		case time.Now().After(svid.Certificates[0].NotAfter):
			c.log.Warn("cached SVID expired; ignoring it", "expired", svid.Certificates[0].NotAfter)
		default:
			c.svid = svid
			c.log.Info("loaded the cached SVID", "expires", svid.Certificates[0].NotAfter)
		}
	} else if !errors.Is(err, trust.ErrNotFound) {
		c.log.Warn("cached SVID", "err", err)
	}
	b, err := c.configStore.Load()
	if err != nil {
		if !errors.Is(err, trust.ErrNotFound) {
			c.log.Warn("cached config", "err", err)
		}
		return
	}
	if len(b) > maxCacheBytes {
		c.log.Warn("cached config too large; ignoring it", "bytes", len(b), "max", maxCacheBytes)
		return
	}
	var m gatewayv1.StreamResponse
	if err := proto.Unmarshal(b, &m); err != nil || !m.GetSnapshot() {
		c.log.Warn("cached config unreadable; ignoring it", "err", err)
		return
	}
	raw := newRawState()
	raw.apply(&m)
	c.accept(raw, 0, true)
	if st, ok := c.State(); ok && st.Cached {
		c.log.Info("serving the cached config until the agent answers", "hub_revision", st.Hub.Revision)
	}
}

// cacheWriter writes the accepted config to the cache after each change,
// at most once per cacheWriteInterval, until ctx is done.
func (c *Client) cacheWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.cacheKick:
		}
		c.mu.Lock()
		raw, rev := c.state.raw, c.state.Revision
		c.mu.Unlock()
		b, err := proto.Marshal(raw.snapshot(rev))
		if err == nil {
			err = c.configStore.Save(b)
		}
		if err != nil {
			c.log.Error("writing the config cache", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(cacheWriteInterval):
		}
	}
}

func saveSVID(st *trust.FileStore, svid *x509svid.SVID) error {
	certs, key, err := svid.Marshal()
	if err != nil {
		return err
	}
	return st.Save(append(certs, key...))
}

// ParseSVIDPEM reads the SVID a gateway caches in its data directory
// (svid.pem, as saveSVID writes it): CERTIFICATE blocks, then the key.
func ParseSVIDPEM(b []byte) (*x509svid.SVID, error) {
	var certs, key []byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(blk)...)
		} else {
			key = append(key, pem.EncodeToMemory(blk)...)
		}
	}
	if len(certs) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("gatewayclient: cached SVID: want certificates and a key")
	}
	return x509svid.Parse(certs, key)
}

// Report tells the agent which stream revision this replica applied (err
// nil) or rejected (err, truncated to MaxReportError bytes), and its
// health. It returns the agent's error; callers retry on their own
// schedule. SendReport also tells the policies the replica holds.
func (c *Client) Report(ctx context.Context, revision uint64, applyErr error, health *gatewayv1.GatewayHealth) error {
	return c.SendReport(ctx, Report{Revision: revision, Err: applyErr, Health: health})
}

// Report is what a gateway replica tells its agent.
type Report struct {
	// Revision is the stream revision the replica applied (Err nil) or
	// rejected (Err, truncated to MaxReportError bytes).
	Revision uint64
	Err      error
	Health   *gatewayv1.GatewayHealth
	// Policies are the traffic policies the replica was sent, by name:
	// the revision in force and any rejection (a reason is truncated to
	// policy.MaxStatusErrorBytes). The agent forwards them to the hub.
	Policies []*fedv1.GatewayPolicyStatus
	// Links are the replica's egress counters per destination cluster,
	// cumulative since it started, each with one latency bucket more than
	// LatencyBoundsSeconds. The agent forwards their differences to the
	// hub (the web UI's traffic).
	Links                []*gatewayv1.LinkCounters
	LatencyBoundsSeconds []float64
}

// truncate cuts s to at most n bytes, never inside a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// SendReport sends r to the agent. It returns the agent's error; callers
// retry on their own schedule.
func (c *Client) SendReport(ctx context.Context, r Report) error {
	req := &gatewayv1.ReportRequest{Instance: c.cfg.Instance, Revision: r.Revision, Health: r.Health,
		Links: r.Links, LatencyBoundsSeconds: r.LatencyBoundsSeconds}
	if r.Err != nil {
		req.Error = truncate(r.Err.Error(), MaxReportError)
	}
	for _, p := range r.Policies {
		if len(p.GetError()) > policy.MaxStatusErrorBytes {
			p = proto.Clone(p).(*fedv1.GatewayPolicyStatus)
			p.Error = truncate(p.GetError(), policy.MaxStatusErrorBytes)
		}
		req.Policies = append(req.Policies, p)
	}
	conn, err := c.conn()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = gatewayv1.NewConfigClient(conn).Report(cctx, req)
	return err
}
