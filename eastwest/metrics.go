package eastwest

import (
	"github.com/prometheus/client_golang/prometheus"
)

// quicCollector reports, at each scrape, the QUIC statistics of the
// connections to remote gateways (quic-go's ConnectionStats): round-trip
// times and the congestion window of the current connection, and packets
// sent and lost over all connections to that gateway (a reconnection
// carries the counters on). A congestion window
// shrunk by losses limits what is in flight long before the CPU does:
// these say why a link is slow where the request series only say that it
// is.
type quicCollector struct {
	pl                *pool
	rtt, minRTT, cwnd *prometheus.Desc
	sent, lost        *prometheus.Desc
}

func newQUICCollector(pl *pool) *quicCollector {
	labels := []string{"cluster", "address"}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("meshfed_gateway_quic_"+name, help, labels, nil)
	}
	return &quicCollector{pl: pl,
		rtt:    d("smoothed_rtt_seconds", "Smoothed round-trip time of the QUIC connection to a remote gateway."),
		minRTT: d("min_rtt_seconds", "Minimum round-trip time seen on the QUIC connection to a remote gateway."),
		cwnd:   d("congestion_window_bytes", "Congestion window of the QUIC connection to a remote gateway."),
		sent:   d("packets_sent_total", "QUIC packets sent to a remote gateway, lost ones included, over all connections to it."),
		lost:   d("packets_lost_total", "QUIC packets to a remote gateway declared lost, over all connections to it."),
	}
}

func (c *quicCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rtt, c.minRTT, c.cwnd, c.sent, c.lost} {
		ch <- d
	}
}

func (c *quicCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.pl.all() {
		l := []string{p.cluster.String(), p.addr}
		if sent, lost := p.packets(); sent > 0 {
			ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(sent), l...)
			ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(lost), l...)
		}
		qc := p.conn()
		if qc == nil {
			continue
		}
		st := qc.ConnectionStats()
		ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, st.SmoothedRTT.Seconds(), l...)
		ch <- prometheus.MustNewConstMetric(c.minRTT, prometheus.GaugeValue, st.MinRTT.Seconds(), l...)
		ch <- prometheus.MustNewConstMetric(c.cwnd, prometheus.GaugeValue, float64(st.CongestionWindow), l...)
	}
}

// metrics are the gateway's Prometheus series. Labels: service is
// "namespace/name", cluster the destination (egress) or source (ingress)
// cluster, "local" for this cluster's own endpoints.
type metrics struct {
	requests  *prometheus.CounterVec   // service, cluster, direction, result
	bytes     *prometheus.CounterVec   // service, cluster, direction, way (sent, received)
	active    *prometheus.GaugeVec     // service, cluster, direction
	failovers *prometheus.CounterVec   // service, from cluster, reason
	ejections *prometheus.CounterVec   // kind (cluster, endpoint), name
	latency   *prometheus.HistogramVec // service, cluster, direction: connect (TCP) or request (HTTP) latency
	gateways  *prometheus.GaugeVec     // cluster, address: 1 while the remote gateway answers probes
	probes    *prometheus.CounterVec   // cluster, result
	policyRev *prometheus.GaugeVec     // policy: the revision in force
	policyRej *prometheus.CounterVec   // policy: revisions rejected
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_requests_total",
			Help: "Connections (TCP ports) or requests (HTTP ports) handled, by service, cluster, direction (egress, ingress) and result."},
			[]string{"service", "cluster", "direction", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_bytes_total",
			Help: "Payload bytes piped, by service, cluster, direction and way (sent to the destination, received from it)."},
			[]string{"service", "cluster", "direction", "way"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshfed_gateway_active_streams",
			Help: "Connections or streams in flight, by service, cluster and direction."},
			[]string{"service", "cluster", "direction"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_failovers_total",
			Help: "Attempts that moved on to the next candidate, by service, the cluster that failed and why."},
			[]string{"service", "cluster", "reason"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_ejections_total",
			Help: "Outlier ejections, by kind (cluster, endpoint) and name."},
			[]string{"kind", "name"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meshfed_gateway_latency_seconds",
			Help:    "Egress: time to an OK status (TCP) or to the response headers (HTTP), by service and cluster.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}},
			[]string{"service", "cluster", "direction"}),
		gateways: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshfed_gateway_remote_up",
			Help: "1 while a remote gateway answers probes, by cluster and address."},
			[]string{"cluster", "address"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_probes_total",
			Help: "Probes of remote gateways, by cluster and result (ok, fail)."},
			[]string{"cluster", "result"}),
		policyRev: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshfed_gateway_policy_revision",
			Help: "The revision of each traffic policy in force (the last good one after a rejection)."},
			[]string{"policy"}),
		policyRej: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_gateway_policy_rejections_total",
			Help: "Traffic policy revisions this gateway could not compile (the last good revision stays in force), by policy."},
			[]string{"policy"}),
	}
	reg.MustRegister(m.requests, m.bytes, m.active, m.failovers, m.ejections, m.latency, m.gateways, m.probes, m.policyRev, m.policyRej)
	return m
}
