package hub

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// A full restart in which every server comes back on a new address (pods
// in Kubernetes get new IPs) elects a leader again and loses nothing: Raft
// reaches its peers by server ID, at the address they gossip now, not the
// one in its configuration. (It used to dial the old addresses forever.)
func TestFullRestartOnNewAddressesElectsALeader(t *testing.T) {
	for _, ip := range []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("loopback address %s (all of 127.0.0.0/8 is loopback on Linux): %v", ip, err)
		}
		_ = ln.Close()
	}
	h := newTestHub(t, 3)
	admin := h.Admin()
	acked := createTokens(t, admin, "south", 10)
	agent := joinCluster(t, admin, "south")
	st, err := agent.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.publish(1, []*fedv1.ExportedService{svc("default", "reviews", 2)})
	if err != nil || res.GetError() != "" {
		t.Fatalf("publish: %v %v", err, res)
	}
	st.cancel()
	for i := range 3 {
		h.Kill(i)
	}
	newIP := func(i int) string { return "127.0.0." + strconv.Itoa(21+i) }
	for i := range 3 {
		h.cfgs[i].BindAddr = newIP(i)
		h.cfgs[i].Join = nil
		for j := range 3 {
			if j != i {
				h.cfgs[i].Join = append(h.cfgs[i].Join, net.JoinHostPort(newIP(j), strconv.Itoa(h.cfgs[j].GossipPort)))
			}
		}
	}
	for i := range 3 {
		h.Start(i)
	}
	l := h.Server(h.Leader(30 * time.Second))
	h.WaitReady(20 * time.Second)
	// Autopilot writes the new addresses into the configuration.
	waitFor(t, 20*time.Second, "the new Raft addresses in the configuration", func() error {
		f := l.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		for _, srv := range f.Configuration().Servers {
			i, _ := strconv.Atoi(string(srv.ID)[1:])
			if want := net.JoinHostPort(newIP(i), strconv.Itoa(h.cfgs[i].RaftPort)); string(srv.Address) != want {
				return fmt.Errorf("%s at %s, want %s", srv.ID, srv.Address, want)
			}
		}
		return nil
	})
	admin = h.Admin()
	var have map[string]bool
	waitFor(t, 10*time.Second, "tokens readable", func() error {
		have, err = tokenSet(t, admin)
		return err
	})
	requireAll(t, have, acked)
	ctx := ctxT(t, 10*time.Second)
	svcs, err := admin.ListServices(ctx, &fedv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs.GetServices()) != 1 || svcs.GetServices()[0].GetKey() != "default/reviews" {
		t.Fatalf("services after the restart: %v", svcs)
	}
	cl, err := admin.ListClusters(ctx, &fedv1.ListClustersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.GetClusters()) != 1 || cl.GetClusters()[0].GetName() != "south" {
		t.Fatalf("clusters after the restart: %v", cl)
	}
}

// One server that fails and comes back on a new address, while the others
// remember it at the old one, takes its gossip name back (memberlist's
// DeadNodeReclaimTime) and so its place in Raft.
func TestServerReturnsOnNewAddress(t *testing.T) {
	const ip = "127.0.0.22"
	if ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0")); err != nil {
		t.Fatalf("loopback address %s (all of 127.0.0.0/8 is loopback on Linux): %v", ip, err)
	} else {
		_ = ln.Close()
	}
	h := newTestHub(t, 3)
	acked := createTokens(t, h.Admin(), "south", 3)
	h.Kill(2)
	waitFor(t, 30*time.Second, "s2 dead to s0", func() error {
		if m, _ := h.Server(0).members.get("s2"); m.Health != "dead" {
			return fmt.Errorf("s2 is %s", m.Health)
		}
		return nil
	})
	h.cfgs[2].BindAddr = ip
	h.Start(2)
	want := net.JoinHostPort(ip, strconv.Itoa(h.cfgs[2].RaftPort))
	waitFor(t, 30*time.Second, "s2 at its new address in gossip and in Raft", func() error {
		for _, i := range []int{0, 1} {
			if m, _ := h.Server(i).members.get("s2"); m.Health != "alive" || m.Meta.Raft != want {
				return fmt.Errorf("s%d sees s2 %s at %s", i, m.Health, m.Meta.Raft)
			}
		}
		l := h.Server(h.Leader(10 * time.Second))
		f := l.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		for _, srv := range f.Configuration().Servers {
			if srv.ID == "s2" && string(srv.Address) != want {
				return fmt.Errorf("leader %s has s2 at %s", l.Name(), srv.Address)
			}
		}
		if _, _, c := h.Server(2).certs.current(); !slices.ContainsFunc(c.Leaf.IPAddresses, func(a net.IP) bool { return a.String() == ip }) {
			return fmt.Errorf("s2's certificate is for %v", c.Leaf.IPAddresses)
		}
		return h.Server(2).Ready(t.Context())
	})
	have, err := tokenSet(t, h.Admin(2))
	if err != nil {
		t.Fatal(err)
	}
	requireAll(t, have, acked)
}
