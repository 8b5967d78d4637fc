package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"

	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/testenv"
)

// cliResult is one run of the meshfed CLI.
type cliResult struct {
	stdout, stderr string
	exit           int
}

// meshfed runs the meshfed CLI as the hub's operator (--config: a running
// server's admin.yaml) and returns what it printed and its exit code; err
// is for a CLI that could not be run at all.
func meshfed(ctx context.Context, fed *testenv.Federation, args ...string) (cliResult, error) {
	cfg, err := fed.Hub().AdminConfig()
	if err != nil {
		return cliResult{}, err
	}
	return run(ctx, fed.Hub().Binary(), append(args, "--config", cfg)...)
}

// operatorConfig writes an operator's client config naming every hub
// server (a server's admin.yaml names those it knew when it wrote it), for
// a CLI that must find the hub whichever servers are down.
func operatorConfig(t testing.TB, fed *testenv.Federation) string {
	t.Helper()
	path, err := fed.Hub().AdminConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hubs = fed.Hub().GRPCAddrs()
	out := filepath.Join(t.TempDir(), "operator.yaml")
	if err := cfg.Save(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// run runs bin with args and returns what it printed and its exit code.
func run(ctx context.Context, bin string, args ...string) (cliResult, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.exit = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("meshfed %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return r, nil
}

// grpcCodes maps a gRPC code's name, as the CLI prints it, to the code.
var grpcCodes = func() map[string]codes.Code {
	m := map[string]codes.Code{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		m[c.String()] = c
	}
	return m
}()

// cliCode reads the gRPC code of a failed command from its standard error:
// the CLI prints a gRPC status as "error: <code>: <message>" (exit 1). It
// returns false when the first line is not such a status.
func cliCode(stderr string) (codes.Code, bool) {
	line, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	rest, ok := strings.CutPrefix(line, "error: ")
	if !ok {
		return 0, false
	}
	name, _, ok := strings.Cut(rest, ": ")
	if !ok {
		return 0, false
	}
	c, ok := grpcCodes[name]
	return c, ok
}

// appliedRevision reads the revision from `meshfed policy apply`'s
// "policy/<name> created|configured (revision N)".
func appliedRevision(stdout string) (uint64, error) {
	_, after, ok := strings.Cut(strings.TrimSpace(stdout), "(revision ")
	if !ok {
		return 0, fmt.Errorf("policy apply printed %q: no revision", stdout)
	}
	return strconv.ParseUint(strings.TrimSuffix(after, ")"), 10, 64)
}

// applyPolicy writes doc to a file in dir and runs `meshfed policy apply
// -f` with it, bounded by timeout, with the client config cfg ("": a
// running server's admin.yaml).
func applyPolicy(fed *testenv.Federation, cfg, dir, doc string, timeout time.Duration) (cliResult, error) {
	f, err := os.CreateTemp(dir, "policy-*.yaml")
	if err != nil {
		return cliResult{}, err
	}
	if _, err := f.WriteString(doc); err != nil {
		return cliResult{}, errors.Join(err, f.Close())
	}
	if err := f.Close(); err != nil {
		return cliResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if cfg == "" {
		return meshfed(ctx, fed, "policy", "apply", "-f", f.Name())
	}
	return run(ctx, fed.Hub().Binary(), "policy", "apply", "-f", f.Name(), "--config", cfg)
}

// waitPolicy waits until every gateway of the federation enforces
// revision rev of policy name, and has rejected none after it.
func waitPolicy(t testing.TB, fed *testenv.Federation, name string, rev uint64, timeout time.Duration) {
	t.Helper()
	if err := testenv.WaitFor(context.Background(), timeout, func(ctx context.Context) error {
		for _, c := range fed.Clusters() {
			p, ok, err := c.Gateway().Policy(ctx, name)
			if err != nil {
				return err
			}
			if !ok || p.Revision != rev || p.Error != "" {
				return fmt.Errorf("%s's gateway holds %+v (found %v), want revision %d in force", c.Name(), p, ok, rev)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// deletePolicy deletes policy name (if any) and waits until no gateway
// holds it.
func deletePolicy(t testing.TB, fed *testenv.Federation, name string) {
	t.Helper()
	ctx := context.Background()
	if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		r, err := meshfed(ctx, fed, "policy", "delete", name)
		if err != nil {
			return err
		}
		if c, _ := cliCode(r.stderr); r.exit != 0 && c != codes.NotFound {
			return fmt.Errorf("policy delete %s: exit %d: %s", name, r.exit, r.stderr)
		}
		for _, c := range fed.Clusters() {
			if _, ok, err := c.Gateway().Policy(ctx, name); err != nil || ok {
				return fmt.Errorf("%s's gateway still holds policy %s (%v)", c.Name(), name, err)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// resolve resolves the clusterset.local name of service's port portName
// as a client pod of c would, with the cluster's DNS server, the agent's:
// SRV _<portName>._tcp.<name>.<namespace>.svc.clusterset.local gives the
// port and the name, whose A record is the ClusterSetIP; the address is
// then mapped to where it is served as kube-proxy would (the derived
// Service's endpoints: the cluster's gateway) and on to loopback.
func resolve(ctx context.Context, c *testenv.ClusterEnv, service, portName string) (string, error) {
	ns, name, _ := strings.Cut(service, "/")
	client := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	ask := func(qname string, qtype uint16) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(qname, qtype)
		r, _, err := client.ExchangeContext(ctx, m, c.Agent().DNSAddr())
		if err != nil {
			return nil, err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			return nil, fmt.Errorf("%s %s at %s's agent: %s, %d answers", dns.TypeToString[qtype], qname, c.Name(), dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return r, nil
	}
	srv, err := ask(fmt.Sprintf("_%s._tcp.%s.%s.svc.clusterset.local.", portName, name, ns), dns.TypeSRV)
	if err != nil {
		return "", err
	}
	rr, ok := srv.Answer[0].(*dns.SRV)
	if !ok {
		return "", fmt.Errorf("SRV answer %v", srv.Answer[0])
	}
	a, err := ask(rr.Target, dns.TypeA)
	if err != nil {
		return "", err
	}
	ar, ok := a.Answer[0].(*dns.A)
	if !ok {
		return "", fmt.Errorf("A answer %v", a.Answer[0])
	}
	ip, _ := netip.AddrFromSlice(ar.A)
	backends, err := c.ServiceBackends(ctx, netip.AddrPortFrom(ip.Unmap(), rr.Port).String())
	if err != nil {
		return "", err
	}
	return c.Loopback(backends[0]), nil
}

// gatewayIdentity is what a cluster's gateway holds: its SVID (cached in
// its data directory, as the gateway wrote it) and its cluster's bundle
// (from the bootstrap document the agent wrote for it).
func gatewayIdentity(t testing.TB, c *testenv.ClusterEnv) (*x509svid.SVID, *spiffebundle.Bundle) {
	t.Helper()
	dir := c.Gateway().DataDir()
	b, err := os.ReadFile(filepath.Join(dir, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := gatewayclient.ParseSVIDPEM(b)
	if err != nil {
		t.Fatalf("%s's gateway SVID: %v", c.Name(), err)
	}
	boot, err := os.ReadFile(filepath.Join(dir, "bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, bundle, err := gatewayclient.ParseBootstrap(boot)
	if err != nil {
		t.Fatal(err)
	}
	return svid, bundle
}
