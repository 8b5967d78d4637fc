package hub

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// The linearizability check models traffic policies as a key-value register:
// put(k, v) is PutPolicy(testPolicy(k, v)), get(k) reads it back
// through ListPolicies. Clients talk to every server while the leader is
// killed and restarted repeatedly; porcupine checks the recorded history.

type kvInput struct {
	put        bool
	key, value string
}

type kvOutput struct {
	value string
	// unknown marks a put whose outcome the client never learned.
	unknown bool
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(kvInput), output.(kvOutput)
		if in.put {
			return true, in.value
		}
		return out.value == state.(string), state
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		if in.put {
			return fmt.Sprintf("put(%s, %s) unknown=%v", in.key, in.value, out.unknown)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
	},
}

func TestLinearizability(t *testing.T) {
	duration, kills := 6*time.Second, 3
	if os.Getenv("MESHFED_LINEARIZABILITY") == "long" {
		duration, kills = 3*time.Minute, 60
	}
	h := newTestHub(t, 3)
	admins := make([]fedv1.AdminClient, 3)
	for i := range admins {
		admins[i] = h.Admin(i)
	}
	start := time.Now()
	stop := make(chan struct{})
	var mu sync.Mutex
	var ops []porcupine.Operation
	record := func(op porcupine.Operation) {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
	}
	keys := []string{"k0", "k1", "k2"}
	const clients = 6
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				admin := admins[rng.IntN(len(admins))]
				key := keys[rng.IntN(len(keys))]
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				call := time.Since(start).Nanoseconds()
				if rng.IntN(2) == 0 {
					v := fmt.Sprintf("c%d-%d", c, n)
					_, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy(key, v)})
					ret := time.Since(start).Nanoseconds()
					switch status.Code(err) {
					case codes.OK:
						record(porcupine.Operation{ClientId: c, Input: kvInput{put: true, key: key, value: v}, Call: call, Output: kvOutput{}, Return: ret})
					case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
						// It may or may not have happened, at any time after the call.
						record(porcupine.Operation{ClientId: c, Input: kvInput{put: true, key: key, value: v}, Call: call, Output: kvOutput{unknown: true}, Return: math.MaxInt64})
					default:
						t.Errorf("put: %v", err)
					}
				} else {
					resp, err := admin.ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
					ret := time.Since(start).Nanoseconds()
					if err == nil {
						val := ""
						for _, p := range resp.GetPolicies() {
							if p.GetName() == key {
								if val, err = policyValue(p); err != nil {
									t.Errorf("get: policy %s: %v", key, err)
								}
							}
						}
						record(porcupine.Operation{ClientId: c, Input: kvInput{key: key}, Call: call, Output: kvOutput{value: val}, Return: ret})
					} else if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
						t.Errorf("get: %v", err)
					}
				}
				cancel()
			}
		}()
	}
	// Kill the leader repeatedly, restarting it once a new one is elected.
	interval := duration / time.Duration(kills+1)
	for k := 0; k < kills; k++ {
		select {
		case <-time.After(interval):
		case <-stop:
		}
		leader := h.Leader(20 * time.Second)
		h.Kill(leader)
		waitFor(t, 20*time.Second, "a new leader", func() error {
			if l := h.Leader(20 * time.Second); l == leader {
				return fmt.Errorf("still %d", l)
			}
			return nil
		})
		h.Start(leader)
	}
	<-time.After(interval)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	puts, gets := 0, 0
	for _, op := range ops {
		if op.Input.(kvInput).put {
			puts++
		} else {
			gets++
		}
	}
	t.Logf("history: %d puts, %d gets, %d leader kills", puts, gets, kills)
	if puts < 20 || gets < 20 {
		t.Fatalf("history too short to mean anything: %d puts, %d gets", puts, gets)
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, time.Minute)
	switch res {
	case porcupine.Illegal:
		path := t.TempDir() + "/linearizability.html"
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(kvModel, info, f)
			_ = f.Close()
		}
		for _, a := range staleReads(ops) {
			t.Log(a)
		}
		t.Fatalf("history is not linearizable (visualization: %s)", path)
	case porcupine.Unknown:
		t.Fatalf("linearizability check timed out (%d operations)", len(ops))
	}
}

// staleReads names concrete anomalies to make a failure readable: a get that
// returned a value overwritten by a put that completed before the get began.
func staleReads(ops []porcupine.Operation) []string {
	var out []string
	for _, g := range ops {
		in := g.Input.(kvInput)
		if in.put {
			continue
		}
		got := g.Output.(kvOutput).value
		var wrote *porcupine.Operation
		for i, p := range ops {
			if pi := p.Input.(kvInput); pi.put && pi.key == in.key && pi.value == got {
				wrote = &ops[i]
			}
		}
		for _, p := range ops {
			pi := p.Input.(kvInput)
			if !pi.put || pi.key != in.key || pi.value == got || p.Output.(kvOutput).unknown {
				continue
			}
			// p completed before g began, and began after got's put completed.
			if p.Return < g.Call && (wrote == nil && got == "" || wrote != nil && wrote.Return < p.Call) {
				out = append(out, fmt.Sprintf("client %d get(%s) at %v..%v returned %q, but put(%s)=%s completed at %v",
					g.ClientId, in.key, time.Duration(g.Call), time.Duration(g.Return), got, pi.key, pi.value, time.Duration(p.Return)))
				break
			}
		}
		if len(out) >= 10 {
			break
		}
	}
	// Non-monotonic reads: g1 saw v1, a later g2 saw v2, but v2's put
	// completed before v1's put began.
	puts := map[string]porcupine.Operation{}
	for _, p := range ops {
		if pi := p.Input.(kvInput); pi.put {
			puts[pi.key+"="+pi.value] = p
		}
	}
	for _, g1 := range ops {
		k := g1.Input.(kvInput)
		if k.put {
			continue
		}
		v1 := g1.Output.(kvOutput).value
		for _, g2 := range ops {
			k2 := g2.Input.(kvInput)
			if k2.put || k2.key != k.key || g2.Call <= g1.Return {
				continue
			}
			v2 := g2.Output.(kvOutput).value
			p1, ok1 := puts[k.key+"="+v1]
			p2, ok2 := puts[k.key+"="+v2]
			if v1 != v2 && ok1 && (v2 == "" || ok2 && p2.Return < p1.Call) {
				out = append(out, fmt.Sprintf("get(%s) by client %d at %v returned %q; a later get by client %d at %v returned older %q",
					k.key, g1.ClientId, time.Duration(g1.Call), v1, g2.ClientId, time.Duration(g2.Call), v2))
				if len(out) >= 10 {
					return out
				}
			}
		}
	}
	return out
}
