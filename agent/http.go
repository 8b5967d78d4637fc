package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func (a *Agent) initMetrics() {
	a.reg = prometheus.NewRegistry()
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_agent_hub_connected",
		Help: "1 while a Sync stream to a hub server is open and synced and the server spoke within the heartbeat bound."}, func() float64 {
		if a.status().connectedAt(time.Now()) {
			return 1
		}
		return 0
	})
	heardAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_agent_hub_last_heard_seconds",
		Help: "Seconds since the hub server last sent anything (a delta, a result, a heartbeat); -1 before the first stream."}, func() float64 {
		heard := a.status().lastHeard
		if heard.IsZero() {
			return -1
		}
		return time.Since(heard).Seconds()
	})
	a.mRevision = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_revision", Help: "Hub revision of the agent's view."})
	a.mExports = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_exports", Help: "Services this cluster exports."})
	a.mImports = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_agent_imports", Help: "Global services this cluster imports."})
	a.mReconnects = prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_hub_reconnects_total", Help: "Sync streams that ended and were retried."})
	a.mPublishErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_agent_publish_errors_total", Help: "Publishes the hub refused."})
	a.reg.MustRegister(connected, heardAge, a.mRevision, a.mExports, a.mImports, a.mReconnects, a.mPublishErrs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.initRotationMetrics()
}

// State is the agent's state as /state serves it and
// `meshfed agent status` shows it.
type State struct {
	Cluster     string         `json:"cluster"`
	TrustDomain string         `json:"trustDomain"`
	Hub         HubState       `json:"hub"`
	Exports     []ExportState  `json:"exports"`
	Imports     []*importPlan  `json:"imports"`
	Clusters    []ClusterState `json:"clusters"`
	Source      *sourceState   `json:"source,omitempty"`
	// Gateways are the gateway replicas following the config stream.
	Gateways []GatewayState `json:"gateways"`
	// CARotation is the cluster CA's rotation; empty before Run has
	// looked at it.
	CARotation CARotationState `json:"caRotation"`
}

// GatewayState is one gateway replica connected to the gateway API.
type GatewayState = gatewayStreamState

// HubState is the agent's connection to the hub.
type HubState struct {
	// Connected: a Sync stream is open and synced, and (with a hub that
	// sends heartbeats) the server spoke within HeartbeatBoundMs.
	Connected bool   `json:"connected"`
	Server    string `json:"server,omitempty"`
	// LastHeardAgoMs is how long ago the server last sent anything (-1
	// before the first stream); HeartbeatBoundMs how long that keeps the
	// agent connected (0: the hub sends no heartbeats).
	LastHeardAgoMs   int64 `json:"lastHeardAgoMs"`
	HeartbeatBoundMs int64 `json:"heartbeatBoundMs,omitempty"`
	// Removed is why the hub refused this cluster as no longer a member;
	// the agent has stopped and removed its imports.
	Removed   string   `json:"removed,omitempty"`
	Revision  uint64   `json:"revision"`
	FromCache bool     `json:"fromCache"`
	LastError string   `json:"lastError,omitempty"`
	Addresses []string `json:"addresses"`
}

// ExportState is one local export.
type ExportState struct {
	Key       string               `json:"key"`
	Ports     []*fedv1.ServicePort `json:"ports"`
	Ready     uint32               `json:"ready"`
	Published bool                 `json:"published"`
	Error     string               `json:"error,omitempty"`
	Conflict  string               `json:"conflict,omitempty"`
}

// ClusterState is one member cluster as the hub last told.
type ClusterState struct {
	Name             string   `json:"name"`
	Region           string   `json:"region"`
	Zone             string   `json:"zone"`
	GatewayAddresses []string `json:"gatewayAddresses,omitempty"`
}

// State returns the agent's current state (a fresh copy).
func (a *Agent) State() State {
	a0 := a.status()
	st := State{Cluster: a.cfg.Cluster.String(), Exports: []ExportState{}, Imports: []*importPlan{}, Clusters: []ClusterState{}, Gateways: a.gw.list()}
	egress := a.egress.snapshot()
	if a0.creds != nil {
		st.TrustDomain = a0.creds.TrustDomain
		st.Hub.Addresses = slices.Clone(a0.creds.HubAddresses)
	}
	now := time.Now()
	st.Hub.Connected, st.Hub.Server, st.Hub.LastError, st.Hub.FromCache = a0.connectedAt(now), a0.server, a0.lastErr, a0.cached
	st.Hub.LastHeardAgoMs, st.Hub.HeartbeatBoundMs, st.Hub.Removed = -1, a0.heardBound.Milliseconds(), a0.removed
	if !a0.lastHeard.IsZero() {
		st.Hub.LastHeardAgoMs = now.Sub(a0.lastHeard).Milliseconds()
	}
	st.CARotation = a0.rotation
	st.CARotation.WaitingFor, st.CARotation.NotHolding = slices.Clone(a0.rotation.WaitingFor), slices.Clone(a0.rotation.NotHolding)
	var own map[string]*fedv1.ExportedService
	if a0.snap != nil {
		st.Hub.Revision = a0.snap.revision
		own = a0.snap.own(a.cfg.Cluster.String())
		plans, _ := planImports(a.cfg.Cluster.String(), a0.snap)
		for _, k := range sortedKeys(plans) {
			p := plans[k]
			p.Egress = map[string]int{}
			for _, port := range p.Ports {
				if e, ok := egress[egressKey{service: p.service(), port: port.GetName()}]; ok {
					p.Egress[port.GetName()] = e
				}
			}
			st.Imports = append(st.Imports, p)
		}
		for _, k := range sortedKeys(a0.snap.clusters) {
			c := a0.snap.clusters[k]
			st.Clusters = append(st.Clusters, ClusterState{Name: c.GetName(), Region: c.GetLocality().GetRegion(), Zone: c.GetLocality().GetZone(),
				GatewayAddresses: slices.Clone(c.GetGatewayAddresses())})
		}
	}
	for _, k := range sortedKeys(a0.desired) {
		s := a0.desired[k]
		e := ExportState{Key: k, Ports: s.GetPorts(), Error: a0.failures[k], Conflict: a0.conflicts[k].Message}
		for _, g := range s.GetEndpoints() {
			e.Ready += g.GetReady()
		}
		_, e.Published = own[k]
		st.Exports = append(st.Exports, e)
	}
	if ss, ok := a0.source.(sourceStatus); ok {
		s := ss.status()
		st.Source = &s
	}
	return st
}

// MetricsHandler serves /metrics alone (Config.MetricsAddr).
func (a *Agent) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return mux
}

// Handler serves /healthz, /readyz, /metrics and /state.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if a.status().snap == nil {
			http.Error(w, "no hub state yet: not synced and no cache", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.State())
	})
	return mux
}

// serveMetrics listens on Config.MetricsAddr and serves MetricsHandler
// there in a goroutine started by goRun.
func (a *Agent) serveMetrics(goRun func(string, func(context.Context) error)) error {
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("agent: metrics: %w", err)
	}
	a.update(func(s *agentStatus) { s.metricsAddr = ln.Addr().String() })
	srv := &http.Server{Handler: a.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
	goRun("metrics", func(ctx context.Context) error {
		go func() { <-ctx.Done(); _ = srv.Close() }()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}
