package federationv1_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func port(name string, n uint32, protocol string) *fedv1.ServicePort {
	return &fedv1.ServicePort{Name: name, Port: n, Protocol: protocol}
}

func validSvc() *fedv1.ExportedService {
	return &fedv1.ExportedService{Namespace: "kube-system", Name: "dns", Ports: []*fedv1.ServicePort{port("dns-tcp", 53, "TCP"), port("dns", 53, "UDP")}}
}

func TestValidateExportedServiceAcceptsWhatKubernetesAllows(t *testing.T) {
	headless := validSvc()
	headless.Headless = true
	headless.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{
		{Hostname: "web-0", Addresses: []string{"10.0.0.1", "fd00::1"}, Ready: true, TargetPorts: map[string]uint32{"dns": 5353, "dns-tcp": 5353}},
		{Addresses: []string{"fd00::2"}},
	}
	affinity := validSvc()
	affinity.SessionAffinity, affinity.SessionAffinityTimeoutSeconds = "ClientIP", 10800
	for name, svc := range map[string]*fedv1.ExportedService{
		"53/TCP and 53/UDP":               validSvc(),
		"one unnamed port":                {Namespace: "a", Name: "b", Ports: []*fedv1.ServicePort{port("", 80, "HTTP")}},
		"headless, dual-stack, hostnames": headless,
		"ClientIP affinity with timeout":  affinity,
	} {
		t.Run(name, func(t *testing.T) {
			if err := fedv1.ValidateExportedService("svc", svc); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestValidateExportedServiceNamesFieldAndBound(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*fedv1.ExportedService)
		field  string
		reason string
	}{
		{"bad namespace", func(s *fedv1.ExportedService) { s.Namespace = "Bad" }, "svc.service.namespace", "63"},
		{"no ports", func(s *fedv1.ExportedService) { s.Ports = nil }, "svc.ports", "1 to 64"},
		{"same port and transport", func(s *fedv1.ExportedService) { s.Ports[1] = port("dns", 53, "HTTP") },
			"svc.ports[1].port", "listed twice for TCP"},
		{"port 0", func(s *fedv1.ExportedService) { s.Ports[0].Port = 0 }, "svc.ports[0].port", "1..65535"},
		{"protocol", func(s *fedv1.ExportedService) { s.Ports[0].Protocol = "SCTP" }, "svc.ports[0].protocol", "TCP, UDP"},
		{"unnamed of several", func(s *fedv1.ExportedService) { s.Ports[1].Name = "" }, "svc.ports[1].name", "required"},
		{"duplicate name", func(s *fedv1.ExportedService) { s.Ports[1].Name = "dns-tcp" }, "svc.ports[1].name", "duplicate"},
		{"long app protocol", func(s *fedv1.ExportedService) { s.Ports[0].AppProtocol = strings.Repeat("a", 254) },
			"svc.ports[0].app_protocol", "253"},
		{"count", func(s *fedv1.ExportedService) { s.Endpoints = []*fedv1.EndpointGroup{{Serving: fedv1.MaxCount + 1}} },
			"svc.endpoints[0].serving", "1048576"},
		{"label key", func(s *fedv1.ExportedService) {
			s.Endpoints = []*fedv1.EndpointGroup{{Labels: map[string]string{"": "x"}}}
		},
			"svc.endpoints[0].labels", "1 to 63"},
		{"affinity", func(s *fedv1.ExportedService) { s.SessionAffinity = "Cookie" }, "svc.session_affinity", "ClientIP"},
		{"timeout without ClientIP", func(s *fedv1.ExportedService) { s.SessionAffinityTimeoutSeconds = 5 },
			"svc.session_affinity_timeout_seconds", "without ClientIP"},
		{"endpoints without headless", func(s *fedv1.ExportedService) {
			s.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Addresses: []string{"10.0.0.1"}}}
		}, "svc.headless_endpoints", "unless headless"},
		{"two IPv4 addresses", func(s *fedv1.ExportedService) {
			s.Headless = true
			s.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Addresses: []string{"10.0.0.1", "10.0.0.2"}}}
		}, "svc.headless_endpoints[0].addresses[1]", "one address per family"},
		{"not an address", func(s *fedv1.ExportedService) {
			s.Headless = true
			s.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Addresses: []string{"10.0.0.1:80"}}}
		}, "svc.headless_endpoints[0].addresses[0]", "IPv4 or IPv6"},
		{"hostname", func(s *fedv1.ExportedService) {
			s.Headless = true
			s.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Hostname: "Web_0", Addresses: []string{"10.0.0.1"}}}
		}, "svc.headless_endpoints[0].hostname", "RFC 1123"},
		{"target port of no port", func(s *fedv1.ExportedService) {
			s.Headless = true
			s.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Addresses: []string{"10.0.0.1"}, TargetPorts: map[string]uint32{"http": 80}}}
		}, "svc.headless_endpoints[0].target_ports", "names no port"},
		{"too large encoded", func(s *fedv1.ExportedService) {
			// Every limit but the size at its bound: 1000 pods, each with
			// a target port for 64 long port names.
			s.Headless = true
			tp := map[string]uint32{"dns": 53, "dns-tcp": 53}
			for j := range fedv1.MaxPortsPerService - 2 {
				p := port(fmt.Sprintf("%02d-%s", j, strings.Repeat("p", 60)), uint32(1000+j), "TCP")
				s.Ports = append(s.Ports, p)
				tp[p.GetName()] = 1
			}
			for i := range fedv1.MaxHeadlessEndpoints {
				s.HeadlessEndpoints = append(s.HeadlessEndpoints, &fedv1.HeadlessEndpoint{Addresses: []string{fmt.Sprintf("10.0.%d.%d", i/256, i%256)}, TargetPorts: tp})
			}
		}, "svc", "3145728"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := validSvc()
			tc.mutate(svc)
			err := fedv1.ValidateExportedService("svc", svc)
			var fe *federation.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, federation.ErrInvalid) {
				t.Fatalf("got %v, want a *federation.FieldError", err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Reason+fe.Error(), tc.reason) {
				t.Fatalf("got field %q reason %q, want field %q mentioning %q", fe.Field, fe.Reason, tc.field, tc.reason)
			}
		})
	}
}

// refValid is a naive restatement of the port and headless-address rules,
// which the fuzzer checks the real validation against.
func refPortsAndAddressesValid(svc *fedv1.ExportedService) bool {
	ps := svc.GetPorts()
	for i, p := range ps {
		for _, q := range ps[:i] {
			if p.GetPort() == q.GetPort() && (p.GetProtocol() == "UDP") == (q.GetProtocol() == "UDP") {
				return false
			}
			if p.GetName() == q.GetName() {
				return false
			}
		}
	}
	for _, e := range svc.GetHeadlessEndpoints() {
		fams := map[bool]bool{}
		for _, a := range e.GetAddresses() {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return false
			}
			if fams[ip.Is4()] {
				return false
			}
			fams[ip.Is4()] = true
		}
	}
	return true
}

func FuzzValidateExportedService(f *testing.F) {
	seed := validSvc()
	seed.Headless = true
	seed.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Hostname: "a", Addresses: []string{"10.0.0.1", "::1"}, TargetPorts: map[string]uint32{"dns": 53}}}
	for _, s := range []*fedv1.ExportedService{validSvc(), seed, {Namespace: "a", Name: "b", Ports: []*fedv1.ServicePort{port("x", 1, "TCP"), port("y", 1, "HTTP")}}} {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var svc fedv1.ExportedService
		if proto.Unmarshal(b, &svc) != nil {
			return
		}
		err := fedv1.ValidateExportedService("f", &svc)
		if err != nil {
			var fe *federation.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, federation.ErrInvalid) || !strings.HasPrefix(fe.Field, "f.") {
				t.Fatalf("error %v (%T) is not a *federation.FieldError under f.", err, err)
			}
			return
		}
		// Accepted: the rules hold, as the naive reference states them.
		if !refPortsAndAddressesValid(&svc) {
			t.Fatalf("accepted %v, which repeats a (port, transport), a port name or an IP family", &svc)
		}
		if len(svc.GetHeadlessEndpoints()) > 0 && !svc.GetHeadless() {
			t.Fatal("accepted headless endpoints on a ClusterSetIP export")
		}
		// And what the hub stores and sends back (a proto round trip)
		// is accepted again.
		rb, err := proto.Marshal(&svc)
		if err != nil {
			t.Fatal(err)
		}
		var again fedv1.ExportedService
		if err := proto.Unmarshal(rb, &again); err != nil {
			t.Fatal(err)
		}
		if err := fedv1.ValidateExportedService("f", &again); err != nil {
			t.Fatalf("accepted once, refused after a round trip: %v", err)
		}
	})
}

func ExampleValidateExportedService() {
	svc := &fedv1.ExportedService{Namespace: "default", Name: "dns",
		Ports: []*fedv1.ServicePort{{Name: "a", Port: 53, Protocol: "TCP"}, {Name: "b", Port: 53, Protocol: "GRPC"}}}
	fmt.Println(fedv1.ValidateExportedService("svc", svc))
	// Output: federation: svc.ports[1].port: "53" is listed twice for TCP (ports[0]); a port number may appear once per transport
}
