package hub

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	commit        prometheus.Histogram
	sends         prometheus.Counter
	slowConsumers prometheus.Counter
}

func newMetrics(s *Server, reg *prometheus.Registry) *metrics {
	m := &metrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshfed_hub_raft_commit_seconds", Help: "Time from proposing a command on the leader to it being applied.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		sends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_hub_sync_deltas_sent_total", Help: "Deltas sent on Sync streams.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_hub_sync_slow_consumers_total", Help: "Sync streams ended because a send waited SyncSendTimeout for the agent to read.",
		}),
	}
	reg.MustRegister(m.commit, m.sends, m.slowConsumers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_hub_raft_leader", Help: "1 if this server is the Raft leader."}, func() float64 {
			if s.raft != nil && s.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_hub_raft_state", Help: "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown."}, func() float64 {
			if s.raft == nil {
				return 3
			}
			return float64(s.raft.State())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_hub_raft_applied_index", Help: "Last applied Raft index."}, func() float64 {
			if s.raft == nil {
				return 0
			}
			return float64(s.fsm.AppliedIndex())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_hub_revision", Help: "State revision (Raft index of the last change)."}, func() float64 {
			return float64(s.fsm.Store().Read().Revision())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshfed_hub_sync_streams", Help: "Open agent Sync streams on this server."}, func() float64 {
			return float64(s.streams.Load())
		}),
	)
	return m
}

func (s *Server) setupHTTP() error {
	ln, err := net.Listen("tcp", s.addr(s.cfg.HTTPPort))
	if err != nil {
		return fmt.Errorf("hub: http listen: %w", err)
	}
	s.httpLn = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.readyz.get(r.Context(), s.Ready); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	s.mountUI(mux)
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return nil
}

// Ready reports whether the server can answer consistent reads now: it has a
// certificate, there is a leader, and it has applied up to the leader's
// commit index.
func (s *Server) Ready(ctx context.Context) error {
	if err := s.notReady(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	idx, err := s.readIndex(ctx)
	if err != nil {
		return err
	}
	if applied := s.fsm.AppliedIndex(); applied < idx {
		return fmt.Errorf("catching up: applied %d of %d", applied, idx)
	}
	return nil
}
