package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/internal/wait"
	"github.com/meshfed/meshfed/testenv/wan"
)

// Env is the dev federation: New, then Run.
type Env struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	ports Ports

	servers  []*child
	clusters []*clusterRun
	sup      *supervisor

	key     string // the hub's encrypt key, from the state directory
	started time.Time
	ready   atomic.Bool
	// failStart aborts the start-up with a cause (a child exited).
	failStart context.CancelCauseFunc
	console   *console
	control   Control // the control API, set by Run

	mu       sync.Mutex // guards file, failures, egress, csIPs and writes of dev.json
	file     *File      // nil until ready
	ready0   time.Duration
	failures map[Failure]bool // in force (Fail, Heal)
}

// clusterRun is one cluster's processes.
type clusterRun struct {
	spec       clusterSpec
	ports      ClusterPorts
	agentDir   string
	gatewayDir string
	agent      *child
	gateway    *child
	workloads  []*workloadRun
	egress     map[string]string // EgressKey -> host:port, once ready
	// clusterSetIPs is the prefix its imports' ClusterSetIPs come from;
	// csIPs the address of each sample service, once ready.
	clusterSetIPs netip.Prefix
	csIPs         map[string]string
	// hubLink carries the agent's connections to the hub servers, through
	// one relay per server (hubVia, in server order): FaultHubLink cuts it.
	hubLink *wan.Link
	hubVia  []string
}

type workloadRun struct {
	spec    workloadSpec
	address string
	child   *child
}

// gatewayDrainTimeout bounds a gateway's drain on stop: dev stops fast.
const gatewayDrainTimeout = time.Second

// New validates cfg and returns an Env.
func New(cfg Config, deps Deps) (*Env, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.GenerateKey == nil || deps.CreateToken == nil {
		return nil, errors.New("devenv: Deps.GenerateKey and Deps.CreateToken are required")
	}
	cfg, err := cfg.abs()
	if err != nil {
		return nil, err
	}
	con := &console{w: cfg.Out, inPlace: cfg.Live && cfg.LiveInPlace}
	log := cfg.Log
	switch {
	case log != nil:
	case cfg.LogOut != nil:
		log = slog.New(slog.NewTextHandler(con.logWriter(cfg.LogOut), &slog.HandlerOptions{Level: cfg.LogLevel})).With("component", "dev")
	default:
		log = slog.New(slog.DiscardHandler)
	}
	e := &Env{cfg: cfg, deps: deps, log: log, ports: Ports{Base: cfg.BasePort}, console: con, failures: map[Failure]bool{}}
	e.build()
	return e, nil
}

func (e *Env) path(elem ...string) string {
	return filepath.Join(append([]string{e.cfg.Dir}, elem...)...)
}

func (e *Env) logPath(name string) string { return e.path("logs", name+".log") }

// adminConfig is the admin client config s0 writes at bootstrap.
func (e *Env) adminConfig() string { return e.path("s0", "admin.yaml") }

// build lays out every child.
func (e *Env) build() {
	gossip0 := e.ports.Server(0).Gossip
	for i := range Servers {
		p := e.ports.Server(i)
		name := "s" + strconv.Itoa(i)
		args := []string{"hub", "--name", name, "--data-dir", e.path(name), "--bind", "127.0.0.1",
			"--grpc-port", strconv.Itoa(p.GRPC), "--raft-port", strconv.Itoa(p.Raft),
			"--gossip-port", strconv.Itoa(p.Gossip), "--http-port", strconv.Itoa(p.HTTP),
			"--bootstrap-expect", strconv.Itoa(Servers), "--join", loopback(gossip0),
			"--gossip-profile", "local"}
		c := &child{name: name, logPath: e.logPath(name)}
		c.prepare = func(context.Context) ([]string, error) {
			// e.key is set by Run before any child starts.
			c.env = []string{e.cfg.EncryptKeyEnv + "=" + e.key}
			return args, nil
		}
		e.servers = append(e.servers, c)
	}
	for j, spec := range topology {
		ws := spec.workloads()
		cr := &clusterRun{spec: spec, ports: e.ports.Cluster(j, len(ws)), clusterSetIPs: e.ports.ClusterSetIPs(j),
			agentDir: e.path("agents", spec.name.String()), gatewayDir: e.path("gateways", spec.name.String())}
		cr.agent = &child{name: spec.name.String() + "-agent", logPath: e.logPath(spec.name.String() + "-agent"),
			prepare: func(ctx context.Context) ([]string, error) { return e.agentArgs(ctx, cr) }}
		gwArgs := []string{"gateway", "--agent", loopback(cr.ports.GatewayAPI),
			"--bootstrap", filepath.Join(cr.agentDir, agent.GatewayBootstrapFile), "--data-dir", cr.gatewayDir,
			"--instance", spec.name.String() + "-gw-0", "--ingress", loopback(cr.ports.Ingress),
			"--egress-bind", "127.0.0.1", "--metrics", loopback(cr.ports.Metrics),
			"--drain-timeout", gatewayDrainTimeout.String()}
		cr.gateway = &child{name: spec.name.String() + "-gateway", logPath: e.logPath(spec.name.String() + "-gateway"),
			prepare: func(ctx context.Context) ([]string, error) {
				// The agent writes the bootstrap document once it has joined.
				boot := filepath.Join(cr.agentDir, agent.GatewayBootstrapFile)
				err := wait.Poll(ctx, pollBackoff, "the gateway bootstrap "+boot, func(context.Context) error {
					_, err := os.Stat(boot)
					return err
				})
				if err != nil || e.ready.Load() {
					return gwArgs, err
				}
				// At start-up a gateway waits for its agent, as the agent
				// waits for the hub: one started earlier fails to connect
				// and backs off (up to seconds). A restarted one does not
				// wait: it serves its cached config whatever the agent's
				// state.
				api := loopback(cr.ports.GatewayAPI)
				err = wait.Poll(ctx, pollBackoff, "the agent's gateway API "+api, func(ctx context.Context) error {
					var d net.Dialer
					c, err := d.DialContext(ctx, "tcp", api)
					if err != nil {
						return err
					}
					return c.Close()
				})
				return gwArgs, err
			}}
		for k, w := range ws {
			wr := &workloadRun{spec: w, address: loopback(cr.ports.Workloads[k])}
			name := spec.name.String() + "-" + w.instance
			args := []string{"dev", "workload", "--kind", string(w.svc.kind), "--listen", wr.address,
				"--service", w.svc.key.String(), "--cluster", spec.name.String(),
				"--zone", spec.locality.Zone(), "--instance", w.instance}
			wr.child = &child{name: name, logPath: e.logPath(name),
				prepare: func(context.Context) ([]string, error) { return args, nil }}
			cr.workloads = append(cr.workloads, wr)
		}
		e.clusters = append(e.clusters, cr)
	}
}

// children are every child, in start order.
func (e *Env) children() []*child {
	cs := append([]*child(nil), e.servers...)
	for _, cr := range e.clusters {
		for _, w := range cr.workloads {
			cs = append(cs, w.child)
		}
		cs = append(cs, cr.agent, cr.gateway)
	}
	return cs
}

// agentArgs returns `agent ...` for a joined cluster, or creates a token
// and returns `join TOKEN ...` the first time (it waits for the hub).
// During start-up it waits for the hub in any case.
func (e *Env) agentArgs(ctx context.Context, cr *clusterRun) ([]string, error) {
	flags := []string{"--cluster", cr.spec.name.String(),
		"--region", cr.spec.locality.Region(), "--zone", cr.spec.locality.Zone(),
		"--source", "file:" + filepath.Join(cr.agentDir, "catalog.yaml"), "--data-dir", cr.agentDir,
		"--http-port", strconv.Itoa(cr.ports.AgentHTTP), "--gateway-api", loopback(cr.ports.GatewayAPI),
		"--egress-ports", fmt.Sprintf("%d-%d", cr.ports.EgressMin, cr.ports.EgressMax),
		"--gateway", loopback(cr.ports.Ingress), "--gateway-ingress-bind", "127.0.0.1",
		"--dns-bind", loopback(cr.ports.DNS), "--clusterset-ips", cr.clusterSetIPs.String()}
	for _, a := range cr.hubVia {
		flags = append(flags, "--hub", a)
	}
	// At start-up an agent waits for the hub: one started earlier fails to
	// connect and backs off (up to seconds). A restarted one does not wait:
	// it serves its cached view whatever the hub's state.
	if !e.ready.Load() {
		if err := wait.Poll(ctx, pollBackoff, "the hub", e.hubReady); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(cr.agentDir, agent.CredentialsFile)); err == nil {
		return append([]string{"agent"}, flags...), nil
	}
	if err := wait.Poll(ctx, pollBackoff, "the hub", e.hubReady); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := e.deps.CreateToken(tctx, e.adminConfig(), cr.spec.name)
	if err != nil {
		return nil, fmt.Errorf("create a token for %s: %w", cr.spec.name, err)
	}
	e.log.Info("created a join token", "cluster", cr.spec.name)
	return append([]string{"join", tok}, flags...), nil
}

// pollBackoff is how often start-up conditions are checked.
var pollBackoff = wait.Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}

// Run starts the federation, waits until it carries traffic, writes
// dev.json and prints a summary, then supervises until ctx is done (or,
// with OneShot, stops at once). Everything is stopped when it returns.
func (e *Env) Run(ctx context.Context) (err error) {
	e.started = time.Now()
	if err := e.prepareDir(); err != nil {
		return err
	}
	if err := e.checkPorts(); err != nil {
		return err
	}
	if err := e.writeCatalogs(); err != nil {
		return err
	}
	stopControl, err := e.startControl()
	if err != nil {
		return err
	}
	defer stopControl()
	if err := e.startHubLinks(); err != nil {
		return err
	}
	defer e.closeHubLinks()
	runCtx, stopAll := context.WithCancel(ctx)
	e.sup = &supervisor{binary: e.cfg.Binary, policy: e.cfg.Restart, stopTimeout: e.cfg.StopTimeout, log: e.log,
		onStart: e.childStarted, onExit: e.childExited}
	defer func() {
		stopAll()
		e.log.Info("stopping every child")
		e.sup.wait()
		e.log.Info("every child stopped")
	}()
	startCtx, failStart := context.WithCancelCause(runCtx)
	defer failStart(nil)
	e.failStart = failStart
	startCtx, cancel := context.WithTimeoutCause(startCtx, e.cfg.ReadyTimeout,
		fmt.Errorf("devenv: not ready within %v (logs in %s)", e.cfg.ReadyTimeout, e.path("logs")))
	defer cancel()
	for _, c := range e.children() {
		e.sup.run(runCtx, c)
	}
	if err := e.waitReady(startCtx); err != nil {
		if c := context.Cause(startCtx); c != nil && ctx.Err() == nil {
			return c
		}
		return err
	}
	took := time.Since(e.started)
	e.ready.Store(true)
	if err := e.writeFile(took); err != nil {
		return err
	}
	e.printSummary(took)
	if e.cfg.OneShot {
		return e.verifyFile()
	}
	if e.cfg.Live {
		liveCtx, stopLive := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.runLive(liveCtx)
		}()
		defer func() {
			stopLive()
			<-done
			e.console.End()
		}()
	}
	<-ctx.Done()
	return nil
}

// startControl serves the control API on its port of the plan, with a new
// token, until the returned function is called.
func (e *Env) startControl() (stop func(), err error) {
	tok, err := newControlToken()
	if err != nil {
		return nil, err
	}
	addr := loopback(e.ports.Control())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devenv: the control API: %w", err)
	}
	e.control = Control{Address: addr, Token: tok}
	srv := &http.Server{Handler: e.controlHandler(tok), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("the control API stopped", "err", err)
		}
	}()
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// startHubLinks starts every cluster's hub link: a relay on a free
// loopback port to each hub server's gRPC port.
func (e *Env) startHubLinks() error {
	for j, cr := range e.clusters {
		cr.hubLink = wan.NewLinkStream(uint64(e.cfg.BasePort), uint64(j), cr.spec.name.String(), "hub")
		cr.hubVia = nil
		for i := range Servers {
			addr, err := cr.hubLink.Relay("tcp", loopback(e.ports.Server(i).GRPC))
			if err != nil {
				return fmt.Errorf("devenv: the hub link of %s: %w", cr.spec.name, err)
			}
			cr.hubVia = append(cr.hubVia, addr)
		}
	}
	return nil
}

func (e *Env) closeHubLinks() {
	for _, cr := range e.clusters {
		if cr.hubLink != nil {
			_ = cr.hubLink.Close()
		}
	}
}

// planFile records the base port the state was created with: the hub's
// Raft configuration and the clusters' gateway addresses hold ports, so
// the same state cannot come back on other ports.
type planFile struct {
	BasePort int `json:"basePort"`
}

// ErrPlanChanged is returned when the state directory was created with
// another base port.
var ErrPlanChanged = errors.New("devenv: the state directory was created with another port plan")

// prepareDir creates the state directory (0700, ignored by git), checks
// its plan, creates the encrypt key once and reads it, and removes a stale
// dev.json.
func (e *Env) prepareDir() error {
	for _, d := range []string{e.cfg.Dir, e.path("logs"), e.path("agents"), e.path("gateways")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.Chmod(e.cfg.Dir, 0o700); err != nil {
		return err
	}
	gi := e.path(".gitignore")
	if _, err := os.Stat(gi); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(gi, []byte("*\n"), 0o600); err != nil {
			return err
		}
	}
	planPath := e.path("plan.json")
	switch b, err := os.ReadFile(planPath); {
	case err == nil:
		var p planFile
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("devenv: %s: %w", planPath, err)
		}
		if p.BasePort != e.cfg.BasePort {
			return fmt.Errorf("%w: port base %d, but %s was created with %d: use that (--port-base %d, MESHFED_DEV_PORT=%d) or start over (make clean)",
				ErrPlanChanged, e.cfg.BasePort, e.cfg.Dir, p.BasePort, p.BasePort, p.BasePort)
		}
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.Stat(e.path("s0")); err == nil {
			return fmt.Errorf("%w: %s holds a hub from before meshfed dev (no plan.json): start over (make clean)", ErrPlanChanged, e.cfg.Dir)
		}
		b, _ := json.Marshal(planFile{BasePort: e.cfg.BasePort})
		if err := writeAtomic(planPath, b, 0o600); err != nil {
			return err
		}
	default:
		return err
	}
	keyPath := e.path("encrypt.key")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		key, err := e.deps.GenerateKey()
		if err != nil {
			return err
		}
		if err := writeAtomic(keyPath, []byte(key+"\n"), 0o600); err != nil {
			return err
		}
		e.log.Info("generated the hub encrypt key", "path", keyPath)
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	if e.key = strings.TrimSpace(string(key)); e.key == "" {
		return fmt.Errorf("devenv: %s is empty: remove it (or start over: make clean)", keyPath)
	}
	if err := os.Remove(e.path(FileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// checkPorts fails if a port of the plan is taken (often by another meshfed
// dev still running).
func (e *Env) checkPorts() error {
	type use struct {
		port int
		what string
		udp  bool
	}
	var uses []use
	for i := range Servers {
		p := e.ports.Server(i)
		n := "s" + strconv.Itoa(i)
		uses = append(uses, use{p.GRPC, n + " gRPC", false}, use{p.Raft, n + " Raft", false},
			use{p.Gossip, n + " gossip", false}, use{p.Gossip, n + " gossip", true}, use{p.HTTP, n + " HTTP", false})
	}
	uses = append(uses, use{e.ports.Control(), "the control API", false})
	for _, cr := range e.clusters {
		n := cr.spec.name.String()
		p := cr.ports
		uses = append(uses, use{p.DNS, n + " agent DNS", false}, use{p.DNS, n + " agent DNS", true})
		uses = append(uses, use{p.AgentHTTP, n + " agent HTTP", false}, use{p.GatewayAPI, n + " gateway API", false},
			use{p.Ingress, n + " gateway ingress", true}, use{p.Metrics, n + " gateway metrics", false})
		for k, w := range p.Workloads {
			uses = append(uses, use{w, n + " " + cr.workloads[k].spec.instance, false})
		}
		for q := p.EgressMin; q <= p.EgressMax; q++ {
			uses = append(uses, use{q, n + " egress range", false})
		}
	}
	for _, u := range uses {
		var err error
		if u.udp {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", loopback(u.port)); err == nil {
				err = pc.Close()
			}
		} else {
			var ln net.Listener
			if ln, err = net.Listen("tcp", loopback(u.port)); err == nil {
				err = ln.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("devenv: port %d (%s) is in use (another meshfed dev still running?): stop it or choose another port base (--port-base, MESHFED_DEV_PORT): %w", u.port, u.what, err)
		}
	}
	return nil
}

// writeCatalogs writes each cluster's file catalog: its exports, with the
// workloads as endpoints. A catalog is rewritten at every start (the port
// plan may differ from the last one); edits last until the next start.
func (e *Env) writeCatalogs() error {
	for _, cr := range e.clusters {
		if err := os.MkdirAll(cr.agentDir, 0o700); err != nil {
			return err
		}
		cat := agent.FileCatalog{Services: []agent.FileService{}}
		for _, ex := range cr.spec.exports {
			s := agent.FileService{Namespace: ex.svc.key.Namespace(), Name: ex.svc.key.Name(), Export: true,
				Ports: []agent.FilePort{{Name: ex.svc.portName, Port: ex.svc.port, Protocol: ex.svc.protocol}}}
			for _, w := range cr.workloads {
				if w.spec.svc.key == ex.svc.key {
					s.Endpoints = append(s.Endpoints, agent.FileEndpoint{Address: w.address, Zone: cr.spec.locality.Zone(),
						Labels: map[string]string{"instance": w.spec.instance}, Ready: true})
				}
			}
			cat.Services = append(cat.Services, s)
		}
		b, err := yaml.Marshal(cat)
		if err != nil {
			return err
		}
		if _, err := agent.ParseFileCatalog(b); err != nil {
			return fmt.Errorf("devenv: the catalog of %s: %w", cr.spec.name, err)
		}
		path := filepath.Join(cr.agentDir, "catalog.yaml")
		if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
			continue
		}
		if err := writeAtomic(path, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// childStarted rewrites dev.json with the new pid once the federation was
// ready.
func (e *Env) childStarted(c *child) {
	if err := e.rewriteFile(); err != nil {
		e.log.Error("rewrite "+FileName, "err", err)
	}
}

// childExited aborts the start-up (something is wrong: show its log), or,
// once ready, logs the exit; the supervisor restarts the child.
func (e *Env) childExited(c *child, err error, ran time.Duration) {
	if !e.ready.Load() {
		e.failStart(fmt.Errorf("devenv: %s exited during start-up: %v; the end of its log %s:\n%s",
			c.name, err, c.logPath, tail(c.logPath, 2000)))
		return
	}
	e.log.Warn("child exited", "child", c.name, "err", err, "ran", ran.Round(time.Millisecond), "log", c.logPath)
	e.console.Eventf("meshfed dev: %s exited (%v) after %v; restarting it (log %s)", c.name, err, ran.Round(time.Millisecond), c.logPath)
}

// snapshot builds dev.json's content from the current pids.
func (e *Env) snapshot(took time.Duration) *File {
	f := &File{Dir: e.cfg.Dir, BasePort: e.cfg.BasePort, ReadySeconds: took.Seconds(), PID: os.Getpid(),
		Hub: Hub{Config: e.adminConfig()}, Control: e.control, Failures: e.failuresLocked()}
	for i, s := range e.servers {
		p := e.ports.Server(i)
		f.Hub.Servers = append(f.Hub.Servers, Server{Name: s.name, GRPC: loopback(p.GRPC), HTTP: loopback(p.HTTP), PID: s.PID(), Log: s.logPath})
	}
	for _, cr := range e.clusters {
		c := Cluster{Name: cr.spec.name.String(), Region: cr.spec.locality.Region(), Zone: cr.spec.locality.Zone(),
			DNS: loopback(cr.ports.DNS), ClusterSetIPs: map[string]string{}, HubVia: append([]string{}, cr.hubVia...),
			Agent: Agent{PID: cr.agent.PID(), HTTP: loopback(cr.ports.AgentHTTP), GatewayAPI: loopback(cr.ports.GatewayAPI),
				DataDir: cr.agentDir, Catalog: filepath.Join(cr.agentDir, "catalog.yaml"), Log: cr.agent.logPath},
			Gateways: []Gateway{{Instance: cr.spec.name.String() + "-gw-0", PID: cr.gateway.PID(), Ingress: loopback(cr.ports.Ingress),
				Metrics: loopback(cr.ports.Metrics), Log: cr.gateway.logPath}},
			Egress: map[string]string{}}
		for k, v := range cr.egress {
			c.Egress[k] = v
		}
		for k, v := range cr.csIPs {
			c.ClusterSetIPs[k] = v
		}
		for _, w := range cr.workloads {
			c.Workloads = append(c.Workloads, Workload{Service: w.spec.svc.key.String(), Instance: w.spec.instance,
				Kind: string(w.spec.svc.kind), Address: w.address, PID: w.child.PID(), Log: w.child.logPath})
		}
		f.Clusters = append(f.Clusters, c)
	}
	return f
}

// rewriteFile writes dev.json again once the federation is ready (a pid or
// a failure changed).
func (e *Env) rewriteFile() error {
	if !e.ready.Load() {
		return nil
	}
	e.mu.Lock()
	took := e.ready0
	e.mu.Unlock()
	return e.writeFile(took)
}

// writeFile writes dev.json atomically.
func (e *Env) writeFile(took time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ready0 = took
	f := e.snapshot(took)
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(e.path(FileName), append(b, '\n'), 0o600); err != nil {
		return err
	}
	e.file = f
	return nil
}

// verifyFile reads dev.json back and checks it describes this federation
// with every process running (OneShot).
func (e *Env) verifyFile() error {
	got, err := ReadFile(e.cfg.Dir)
	if err != nil {
		return err
	}
	var errs []error
	if len(got.Hub.Servers) != Servers {
		errs = append(errs, fmt.Errorf("hub.servers: %d, want %d", len(got.Hub.Servers), Servers))
	}
	if got.Control.Address == "" || got.Control.Token == "" {
		errs = append(errs, errors.New("control: no address or token"))
	}
	if len(got.Clusters) != len(topology) {
		errs = append(errs, fmt.Errorf("clusters: %d, want %d", len(got.Clusters), len(topology)))
	}
	for i, c := range got.Clusters {
		if len(c.Egress) != len(services) {
			errs = append(errs, fmt.Errorf("clusters[%d].egress: %d entries, want %d", i, len(c.Egress), len(services)))
		}
		if len(c.ClusterSetIPs) != len(services) || c.DNS == "" {
			errs = append(errs, fmt.Errorf("clusters[%d]: dns %q, clusterSetIPs %v, want an address and one IP per service", i, c.DNS, c.ClusterSetIPs))
		}
		if len(c.HubVia) != Servers {
			errs = append(errs, fmt.Errorf("clusters[%d].hubVia: %d addresses, want %d", i, len(c.HubVia), Servers))
		}
		if c.Agent.PID == 0 || len(c.Gateways) == 0 || c.Gateways[0].PID == 0 {
			errs = append(errs, fmt.Errorf("clusters[%d]: a process without a pid", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("devenv: %s does not describe the federation: %w", FileName, err)
	}
	e.log.Info(FileName + " verified")
	return nil
}
