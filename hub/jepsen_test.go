package hub

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
)

// TestJepsen checks the hub's linearizability under real faults, the way
// Jepsen does: real `meshfed hub` processes, clients writing and reading
// through every server, and a nemesis on a seeded random schedule that
//
//   - SIGKILLs the leader and restarts it after a short random delay;
//   - SIGSTOPs the leader for longer than an election timeout while the
//     others elect a new one and acknowledge writes, then SIGCONTs it with
//     reads through it already on their way (a leader that does not know it
//     was deposed must not answer a linearizable read with stale data);
//   - isolates one server (the leader half the time) from the others on
//     Raft, gossip and gRPC forwarding (peerNet), then heals.
//
// Porcupine checks the history of admin writes (PutPolicy) and linearizable
// reads (ListPolicies) against a register per key; a write whose outcome the
// client never learned (Unavailable, DeadlineExceeded) may take effect at
// any time after its call, or never. An agent-like Sync client reconnects
// to random servers and must never apply a revision below one it has seen.
// Every killed server must come back as a healthy voter.
//
// MESHFED_JEPSEN=long runs it for 10 minutes (make test-long);
// MESHFED_JEPSEN_SEED replays a schedule (the seed is logged);
// MESHFED_JEPSEN_SERVERS is 3 (default) or 5.
func TestJepsen(t *testing.T) {
	cfg := jepsenConfigFromEnv(t)
	t.Logf("jepsen: seed %d (MESHFED_JEPSEN_SEED=%d replays the schedule), %d servers, at least %v",
		cfg.seed, cfg.seed, cfg.servers, cfg.duration)
	usablePeerNetIPs(t, cfg.servers)
	var pn *peerNet
	h := startProcHubWith(t, cfg.servers, procHubOptions{
		advertise:   peerNetIP,
		beforeStart: func(h *procHub) { pn = newPeerNet(t, h, cfg.seed) },
	})
	j := newJepsen(t, h, pn, cfg)
	j.run()
}

type jepsenConfig struct {
	duration time.Duration
	seed     uint64
	servers  int
	clients  int
	// keys per generation; a new generation of keys starts every
	// generation, which keeps each key's history short for the checker.
	keys       int
	generation time.Duration
	// checkTimeout bounds porcupine.
	checkTimeout time.Duration
}

func jepsenConfigFromEnv(t *testing.T) jepsenConfig {
	t.Helper()
	c := jepsenConfig{duration: 30 * time.Second, servers: 3, clients: 4, keys: 5, generation: 15 * time.Second, checkTimeout: time.Minute}
	switch v := os.Getenv("MESHFED_JEPSEN"); v {
	case "":
	case "long":
		c.duration, c.checkTimeout = 10*time.Minute, 5*time.Minute
	default:
		t.Fatalf("MESHFED_JEPSEN=%q: must be empty or long", v)
	}
	c.seed = rand.Uint64()
	if v := os.Getenv("MESHFED_JEPSEN_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MESHFED_JEPSEN_SEED=%q: must be an unsigned decimal integer: %v", v, err)
		}
		c.seed = s
	}
	if v := os.Getenv("MESHFED_JEPSEN_SERVERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 3 && n != 5) {
			t.Fatalf("MESHFED_JEPSEN_SERVERS=%q: must be 3 or 5", v)
		}
		c.servers = n
	}
	return c
}

// jepsen is one run: the hub, its network, the clients' history and the
// nemesis.
type jepsen struct {
	t     *testing.T
	cfg   jepsenConfig
	h     *procHub
	pn    *peerNet
	rng   *rand.Rand // the nemesis's
	start time.Time

	admins []fedv1.AdminClient // one per server, that server alone, no retries
	// down marks servers the nemesis killed and has not restarted: clients
	// leave them alone (their calls would only add indeterminate writes).
	down []atomic.Bool

	mu   sync.Mutex
	ops  []porcupine.Operation
	stat jepsenStats
	// lastAck is when (ns since start) the latest acknowledged put was
	// called.
	lastAck atomic.Int64

	faults []string
}

type jepsenStats struct {
	puts, indeterminate, reads, readsFailed int
	staleLeaderReads, staleLeaderRefused    int
	syncStreams, syncDeltas                 int
	syncMaxRevision, syncPublished          uint64
}

func newJepsen(t *testing.T, h *procHub, pn *peerNet, cfg jepsenConfig) *jepsen {
	j := &jepsen{t: t, cfg: cfg, h: h, pn: pn, rng: rand.New(rand.NewPCG(cfg.seed, 0)), down: make([]atomic.Bool, len(h.servers))}
	for _, p := range h.servers {
		ac, err := clientconfig.Load(p.adminConfig())
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg, err := ac.TLS()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient("passthrough:///"+p.grpcAddr(), jepsenDialOpts(credentials.NewTLS(tlsCfg))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		j.admins = append(j.admins, fedv1.NewAdminClient(conn))
	}
	return j
}

// jepsenDialOpts: one server per connection, no retries (the history must
// show what each call did), and reconnects at most a second apart, so that
// a restarted server is used again soon.
func jepsenDialOpts(creds credentials.TransportCredentials) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDisableRetry(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}
}

func (j *jepsen) now() int64 { return time.Since(j.start).Nanoseconds() }

func (j *jepsen) record(ops ...porcupine.Operation) {
	j.mu.Lock()
	j.ops = append(j.ops, ops...)
	j.mu.Unlock()
}

// keysAt are the keys in use at call time at.
func (j *jepsen) keysAt(at int64) []string {
	g := at / j.cfg.generation.Nanoseconds()
	keys := make([]string, j.cfg.keys)
	for k := range keys {
		keys[k] = fmt.Sprintf("g%d-k%d", g, k)
	}
	return keys
}

// put writes value to key through server i and records the outcome.
func (j *jepsen) put(client, i int, key, value string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	call := j.now()
	_, err := j.admins[i].PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy(key, value)})
	ret := j.now()
	in := kvInput{put: true, key: key, value: value}
	switch status.Code(err) {
	case codes.OK:
		j.record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: kvOutput{}, Return: ret})
		j.mu.Lock()
		j.stat.puts++
		j.mu.Unlock()
		for {
			last := j.lastAck.Load()
			if call <= last || j.lastAck.CompareAndSwap(last, call) {
				break
			}
		}
	case codes.Unavailable, codes.DeadlineExceeded:
		// It may have happened, at any time after the call, or never.
		j.record(porcupine.Operation{ClientId: client, Input: in, Call: call, Output: kvOutput{unknown: true}, Return: math.MaxInt64})
		j.mu.Lock()
		j.stat.indeterminate++
		j.mu.Unlock()
	default:
		j.t.Errorf("put(%s, %s) through %s: %v", key, value, j.h.servers[i].name, err)
	}
}

// read reads every current key through server i, in one ListPolicies, and
// records one get per key. It reports whether the read was answered.
func (j *jepsen) read(client, i int, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	call := j.now()
	keys := j.keysAt(call)
	resp, err := j.admins[i].ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
	ret := j.now()
	if err != nil {
		j.mu.Lock()
		j.stat.readsFailed++
		j.mu.Unlock()
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			j.t.Errorf("read through %s: %v", j.h.servers[i].name, err)
		}
		return false, err
	}
	have := map[string]string{}
	for _, p := range resp.GetPolicies() {
		v, err := policyValue(p)
		if err != nil {
			j.t.Errorf("read through %s: policy %s: %v", j.h.servers[i].name, p.GetName(), err)
		}
		have[p.GetName()] = v
	}
	ops := make([]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		ops = append(ops, porcupine.Operation{ClientId: client, Input: kvInput{key: k}, Call: call, Output: kvOutput{value: have[k]}, Return: ret})
	}
	j.record(ops...)
	j.mu.Lock()
	j.stat.reads++
	j.mu.Unlock()
	return true, nil
}

// client runs one workload client until stop: puts and reads, half each,
// through random servers that are not known to be down, about 50 a second.
func (j *jepsen) client(c int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(j.cfg.seed, uint64(c)+1))
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		i := rng.IntN(len(j.admins))
		if j.down[i].Load() {
			continue
		}
		if rng.IntN(2) == 0 {
			keys := j.keysAt(j.now())
			j.put(c, i, keys[rng.IntN(len(keys))], fmt.Sprintf("c%d-%d", c, n))
		} else {
			_, _ = j.read(c, i, 3*time.Second)
		}
	}
}

func (j *jepsen) run() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopClients()
	j.start = time.Now()
	for c := range j.cfg.clients {
		wg.Add(1)
		go func() { defer wg.Done(); j.client(c, stop) }()
	}
	sc := j.newSyncClient()
	wg.Add(1)
	go func() { defer wg.Done(); sc.run(stop) }()

	j.nemesis()

	// Every server must be a healthy voter again, with clients running.
	j.pn.heal()
	j.waitHealthy(60 * time.Second)
	stopClients()
	j.mu.Lock()
	j.stat.syncStreams, j.stat.syncDeltas, j.stat.syncMaxRevision, j.stat.syncPublished = sc.streams, sc.deltas, sc.maxSeen, sc.published
	j.mu.Unlock()
	j.check()
}

// nemesis injects faults until the run has lasted cfg.duration and every
// kind of fault has happened at least once: the first three are one of each,
// in a random order, then the leader is killed twice as often as it is
// paused or a server isolated. Faults start 5-15 s apart (or at once when
// the previous one took longer).
func (j *jepsen) nemesis() {
	kinds := []string{"kill", "pause", "partition"}
	j.rng.Shuffle(len(kinds), func(a, b int) { kinds[a], kinds[b] = kinds[b], kinds[a] })
	next := j.start.Add(3 * time.Second)
	for n := 0; ; n++ {
		<-time.After(time.Until(next))
		if time.Since(j.start) >= j.cfg.duration && n >= len(kinds) {
			return
		}
		kind := "kill"
		if n < len(kinds) {
			kind = kinds[n]
		} else if r := j.rng.IntN(4); r == 2 {
			kind = "pause"
		} else if r == 3 {
			kind = "partition"
		}
		j.expectRunning()
		at := time.Since(j.start)
		var what string
		switch kind {
		case "kill":
			what = j.killLeader()
		case "pause":
			what = j.pauseLeader()
		case "partition":
			what = j.isolate()
		}
		j.faults = append(j.faults, fmt.Sprintf("%6.1fs %s", at.Seconds(), what))
		j.t.Logf("nemesis at %v: %s", at.Round(100*time.Millisecond), what)
		j.expectRunning()
		next = j.start.Add(at + 5*time.Second + time.Duration(j.rng.Int64N(int64(10*time.Second))))
	}
}

// expectRunning fails the test if a server the nemesis did not kill is not
// running: it exited on its own.
func (j *jepsen) expectRunning() {
	for i, p := range j.h.servers {
		if !j.down[i].Load() && !p.running() {
			j.t.Fatalf("%s exited on its own; log tail:\n%s", p.name, p.tail(4000))
		}
	}
}

// killLeader SIGKILLs the leader, and restarts it after 0.2-3 s on what it
// left on disk. It must come back as a healthy voter.
func (j *jepsen) killLeader() string {
	l := j.h.leader(30 * time.Second)
	p := j.h.servers[l]
	j.down[l].Store(true)
	p.kill()
	delay := 200*time.Millisecond + time.Duration(j.rng.Int64N(int64(2800*time.Millisecond)))
	<-time.After(delay)
	if err := p.start(60 * time.Second); err != nil {
		j.t.Fatalf("%s did not come back after SIGKILL: %v", p.name, err)
	}
	j.down[l].Store(false)
	j.waitHealthy(60 * time.Second)
	return fmt.Sprintf("SIGKILL leader %s, restarted after %v", p.name, delay.Round(time.Millisecond))
}

// pauseLeader SIGSTOPs the leader until another server has been elected and
// has acknowledged a write, and for at least 2.5-4 election timeouts, then
// SIGCONTs it with reads through it in flight and sent right after.
func (j *jepsen) pauseLeader() string {
	const electionTimeout = time.Second // the binary's default
	l := j.h.leader(30 * time.Second)
	p := j.h.servers[l]
	hold := time.Duration(2.5*float64(electionTimeout)) + time.Duration(j.rng.Int64N(int64(3*electionTimeout/2)))
	if err := p.pause(); err != nil {
		j.t.Fatal(err)
	}
	pausedAt := j.now()
	until := time.After(hold)
	newLeader := j.h.leader(30*time.Second, l)
	waitFor(j.t, 30*time.Second, "a write acknowledged by "+j.h.servers[newLeader].name+" while "+p.name+" is stopped", func() error {
		if j.lastAck.Load() <= pausedAt {
			return errors.New("none yet")
		}
		return nil
	})
	<-until
	// Reads through the old leader: some already sent (they wait in its
	// socket buffers), some sent the moment it runs again.
	staleClient := j.cfg.clients // porcupine client IDs after the workload's
	var wg sync.WaitGroup
	var answered, refused atomic.Int64
	var errMu sync.Mutex
	codesSeen := map[codes.Code]int{}
	readOld := func(k int) {
		defer wg.Done()
		ok, err := j.read(staleClient+k, l, 5*time.Second)
		if ok {
			answered.Add(1)
			return
		}
		refused.Add(1)
		errMu.Lock()
		codesSeen[status.Code(err)]++
		errMu.Unlock()
	}
	const early, late = 8, 4
	for k := range early {
		wg.Add(1)
		go readOld(k)
	}
	if err := p.resume(); err != nil {
		j.t.Fatal(err)
	}
	resumedAt := j.now()
	for k := early; k < early+late; k++ {
		wg.Add(1)
		go readOld(k)
	}
	wg.Wait()
	j.mu.Lock()
	j.stat.staleLeaderReads += int(answered.Load())
	j.stat.staleLeaderRefused += int(refused.Load())
	j.mu.Unlock()
	j.waitHealthy(60 * time.Second)
	return fmt.Sprintf("SIGSTOP leader %s for %v (%s elected), SIGCONT: %d reads through it answered, %d refused %v",
		p.name, time.Duration(resumedAt-pausedAt).Round(time.Millisecond), j.h.servers[newLeader].name, answered.Load(), refused.Load(), codesSeen)
}

// isolate cuts one server (the leader half the time) off from the others
// for 3-8 s. If it was the leader, the others must elect a new one.
func (j *jepsen) isolate() string {
	l := j.h.leader(30 * time.Second)
	victim, role := l, "leader"
	if j.rng.IntN(2) == 0 {
		victim = (l + 1 + j.rng.IntN(len(j.h.servers)-1)) % len(j.h.servers)
		role = "follower"
	}
	p := j.h.servers[victim]
	hold := 3*time.Second + time.Duration(j.rng.Int64N(int64(5*time.Second)))
	j.pn.isolate(victim)
	until := time.After(hold)
	elected := ""
	if victim == l {
		elected = ", " + j.h.servers[j.h.leader(30*time.Second, l)].name + " elected"
	}
	<-until
	j.pn.heal()
	j.waitHealthy(60 * time.Second)
	return fmt.Sprintf("isolate %s %s for %v%s, heal", role, p.name, hold.Round(time.Millisecond), elected)
}

// waitHealthy waits until one leader sees every server as an alive voter,
// and every server is running, says it is leader or follower and has
// applied at least what the leader had a moment before.
func (j *jepsen) waitHealthy(timeout time.Duration) {
	j.t.Helper()
	waitFor(j.t, timeout, "every server a healthy voter", func() error {
		for _, p := range j.h.servers {
			if !p.running() {
				return fmt.Errorf("%s is not running", p.name)
			}
		}
		l := j.h.leader(timeout)
		lead, err := j.h.status(l)
		if err != nil {
			return err
		}
		for i, p := range j.h.servers {
			if s := serverStatus(lead, p.name); s.GetSuffrage() != "voter" || s.GetHealth() != "alive" {
				return fmt.Errorf("leader %s sees %s as %v", lead.GetAnsweredBy(), p.name, s)
			}
			own, err := j.h.status(i)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if st := serverStatus(own, p.name).GetState(); st != "follower" && st != "leader" {
				return fmt.Errorf("%s says it is %q", p.name, st)
			}
			if own.GetRevision() < lead.GetRevision() {
				return fmt.Errorf("%s at revision %d, leader %s was at %d", p.name, own.GetRevision(), lead.GetAnsweredBy(), lead.GetRevision())
			}
		}
		return nil
	})
}

func (j *jepsen) check() {
	t := j.t
	j.mu.Lock()
	defer j.mu.Unlock()
	ops, st := j.ops, j.stat
	t.Logf("jepsen: %v, seed %d, %d servers; faults:", time.Since(j.start).Round(time.Second), j.cfg.seed, len(j.h.servers))
	for _, f := range j.faults {
		t.Logf("  %s", f)
	}
	t.Logf("jepsen: %d operations: %d puts acknowledged, %d indeterminate; %d reads (%d gets), %d reads failed; "+
		"through a resumed leader: %d reads answered, %d refused; sync: %d streams, %d deltas, revisions up to %d, %d publishes acknowledged; "+
		"%d relay connections/datagrams from outside the hub",
		len(ops), st.puts, st.indeterminate, st.reads, len(ops)-st.puts-st.indeterminate, st.readsFailed,
		st.staleLeaderReads, st.staleLeaderRefused, st.syncStreams, st.syncDeltas, st.syncMaxRevision, st.syncPublished, j.pn.unknown.Load())
	if st.puts < 50 || st.reads < 50 {
		t.Fatalf("history too short to mean anything: %d puts, %d reads", st.puts, st.reads)
	}
	if st.syncStreams < 3 || st.syncDeltas < 10 {
		t.Fatalf("the sync client barely ran: %d streams, %d deltas", st.syncStreams, st.syncDeltas)
	}
	ops, happened, dropped := resolveIndeterminate(ops)
	t.Logf("jepsen: indeterminate puts: %d seen by a read (their return set to that read's), %d never seen (dropped)", happened, dropped)
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, j.cfg.checkTimeout)
	verdict := map[porcupine.CheckResult]string{porcupine.Ok: "linearizable", porcupine.Illegal: "NOT linearizable", porcupine.Unknown: "unknown (checker timed out)"}[res]
	t.Logf("jepsen: verdict: %s (checked in %v)", verdict, time.Since(begin).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		path := "(not written)"
		if f, err := os.CreateTemp("", "meshfed-jepsen-*.html"); err != nil {
			t.Logf("visualization: %v", err)
		} else {
			_ = f.Close()
			if err := porcupine.VisualizePath(kvModel, info, f.Name()); err != nil {
				t.Logf("visualization: %v", err)
			} else {
				path = f.Name()
			}
		}
		// Name the anomalies of the keys that fail on their own (staleReads
		// is quadratic: never over the whole history).
		for _, keyOps := range kvModel.Partition(ops) {
			if porcupine.CheckOperationsTimeout(kvModel, keyOps, 10*time.Second) != porcupine.Illegal {
				continue
			}
			t.Logf("key %s is not linearizable:", keyOps[0].Input.(kvInput).key)
			for _, a := range staleReads(keyOps) {
				t.Log("  " + a)
			}
		}
		t.Fatalf("history is not linearizable (seed %d; visualization: %s)", j.cfg.seed, path)
	case porcupine.Unknown:
		t.Fatalf("linearizability check timed out after %v (%d operations)", j.cfg.checkTimeout, len(ops))
	}
}

// resolveIndeterminate rewrites the puts whose outcome is unknown (return
// +inf) into an equivalent history the checker handles fast, since every
// value is written once:
//
//   - A put whose value some read returned happened before that read's
//     linearization point, so before the read returned: its return becomes
//     the earliest return of such a read (if that is not before its call,
//     which is an anomaly the checker is left to find).
//   - A put whose value no read returned can be dropped: in a linearization
//     with it, no read lies between it and the next put of its key, so
//     removing it leaves a linearization; and one without it is one with
//     it placed at the end.
//
// Left in at +inf, each stays pending to the end of its key's history, and
// a few dozen of them make porcupine's search explode.
func resolveIndeterminate(ops []porcupine.Operation) (out []porcupine.Operation, happened, dropped int) {
	type kv struct{ key, value string }
	seen := map[kv]int64{} // earliest return of a read of the value
	for _, op := range ops {
		in := op.Input.(kvInput)
		if in.put {
			continue
		}
		k := kv{in.key, op.Output.(kvOutput).value}
		if r, ok := seen[k]; !ok || op.Return < r {
			seen[k] = op.Return
		}
	}
	out = make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in := op.Input.(kvInput)
		if !in.put || !op.Output.(kvOutput).unknown {
			out = append(out, op)
			continue
		}
		r, ok := seen[kv{in.key, in.value}]
		if !ok {
			dropped++
			continue
		}
		happened++
		if r >= op.Call {
			op.Return = r
		}
		out = append(out, op)
	}
	return out, happened, dropped
}

// syncClient is an agent-like Sync client: it opens a stream to a random
// server, resumes from the last revision it applied, publishes its exports,
// applies deltas for a random 1-4 s, and moves to another server; when a
// stream fails it moves at once. It must never apply a revision below one
// it has seen.
type syncClient struct {
	j     *jepsen
	agent *testAgent
	conns []fedv1.SyncClient
	rng   *rand.Rand

	maxSeen          uint64
	maxFrom          string // the server that sent maxSeen
	streams, deltas  int
	published, nonce uint64
}

func (j *jepsen) newSyncClient() *syncClient {
	t := j.t
	agent := joinCluster(t, j.admins[j.h.leader(30*time.Second)], "jepsen")
	sc := &syncClient{j: j, agent: agent, rng: rand.New(rand.NewPCG(j.cfg.seed, 1000))}
	for _, p := range j.h.servers {
		conn, err := grpc.NewClient("passthrough:///"+p.grpcAddr(), jepsenDialOpts(credentials.NewTLS(agent.tls))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		sc.conns = append(sc.conns, fedv1.NewSyncClient(conn))
	}
	return sc
}

func (sc *syncClient) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		i := sc.rng.IntN(len(sc.conns))
		if sc.j.down[i].Load() {
			continue
		}
		life := time.Second + time.Duration(sc.rng.Int64N(int64(3*time.Second)))
		ctx, cancel := context.WithTimeout(context.Background(), life)
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		sc.stream(ctx, i)
		cancel()
	}
}

// stream runs one Sync stream with server i until ctx ends or it fails.
func (sc *syncClient) stream(ctx context.Context, i int) {
	name := sc.j.h.servers[i].name
	st, err := sc.conns[i].Sync(ctx)
	if err != nil {
		return
	}
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Hello{Hello: &fedv1.SyncHello{
		Cluster: sc.agent.cluster, ResumeRevision: sc.maxSeen, Capabilities: &fedv1.Capabilities{Version: federation.CapabilityVersion},
	}}}); err != nil {
		return
	}
	m, err := st.Recv()
	if err != nil || m.GetHello() == nil {
		return
	}
	sc.streams++
	sc.nonce++
	if err := st.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Publish{Publish: &fedv1.PublishExports{
		Nonce: sc.nonce, Upserts: []*fedv1.ExportedService{svc("default", "jepsen", uint32(sc.nonce%1000))},
	}}}); err != nil {
		return
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return
		}
		if r := m.GetPublishResult(); r != nil && r.GetErrorCode() == "" {
			sc.published++
		}
		d := m.GetDelta()
		if d == nil {
			continue
		}
		sc.deltas++
		rev := d.GetRevision()
		if rev == 0 { // a part of a split delta: no revision of its own
			continue
		}
		if rev < sc.maxSeen {
			sc.j.t.Errorf("sync: %s sent revision %d (reset %v) after the client had applied %d from %s",
				name, rev, d.GetReset_(), sc.maxSeen, sc.maxFrom)
		}
		if rev >= sc.maxSeen {
			sc.maxSeen = rev
			sc.maxFrom = name
		}
	}
}
