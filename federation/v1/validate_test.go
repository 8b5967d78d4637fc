package federationv1_test

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
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
	spec := validSvc()
	spec.IpFamilies = []string{"IPv6", "IPv4"}
	spec.InternalTrafficPolicy, spec.TrafficDistribution = "Local", "PreferClose"
	spec.ExportedLabels = map[string]string{"app": "web", "example.com/tier": "", "Team_1.x": "A-b_c.9"}
	spec.ExportedAnnotations = map[string]string{"example.com/owner": "anything at all: \n{}", "note": ""}
	sctp := validSvc()
	sctp.Ports = append(sctp.Ports, port("dns-sctp", 53, "SCTP"))
	for name, svc := range map[string]*fedv1.ExportedService{
		"53/TCP and 53/UDP":                                   validSvc(),
		"53/TCP, 53/UDP and 53/SCTP":                          sctp,
		"one unnamed port":                                    {Namespace: "a", Name: "b", Ports: []*fedv1.ServicePort{port("", 80, "HTTP")}},
		"headless, dual-stack, hostnames":                     headless,
		"ClientIP affinity with timeout":                      affinity,
		"families, policies, exported labels and annotations": spec,
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
		{"same port and SCTP", func(s *fedv1.ExportedService) {
			s.Ports = append(s.Ports, port("a", 53, "SCTP"), port("b", 53, "SCTP"))
		}, "svc.ports[3].port", "listed twice for SCTP"},
		{"port 0", func(s *fedv1.ExportedService) { s.Ports[0].Port = 0 }, "svc.ports[0].port", "1..65535"},
		{"protocol", func(s *fedv1.ExportedService) { s.Ports[0].Protocol = "QUIC" }, "svc.ports[0].protocol", "TCP, UDP, SCTP"},
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
		{"three IP families", func(s *fedv1.ExportedService) { s.IpFamilies = []string{"IPv4", "IPv6", "IPv4"} },
			"svc.ip_families", "at most 2"},
		{"IP family name", func(s *fedv1.ExportedService) { s.IpFamilies = []string{"ipv4"} }, "svc.ip_families[0]", `"IPv4" or "IPv6"`},
		{"IP family twice", func(s *fedv1.ExportedService) { s.IpFamilies = []string{"IPv6", "IPv6"} }, "svc.ip_families[1]", "repeats"},
		{"internal traffic policy", func(s *fedv1.ExportedService) { s.InternalTrafficPolicy = "Node" },
			"svc.internal_traffic_policy", `"Cluster" or "Local"`},
		{"long traffic distribution", func(s *fedv1.ExportedService) { s.TrafficDistribution = strings.Repeat("P", 64) },
			"svc.traffic_distribution", "at most 63"},
		{"too many exported labels", func(s *fedv1.ExportedService) {
			s.ExportedLabels = map[string]string{}
			for i := range fedv1.MaxExportedLabels + 1 {
				s.ExportedLabels[fmt.Sprint("l", i)] = ""
			}
		}, "svc.exported_labels", "at most 64"},
		{"label key prefix", func(s *fedv1.ExportedService) { s.ExportedLabels = map[string]string{"Example.com/a": "x"} },
			"svc.exported_labels", "DNS subdomain"},
		{"long label key name", func(s *fedv1.ExportedService) { s.ExportedLabels = map[string]string{strings.Repeat("a", 64): "x"} },
			"svc.exported_labels", "1 to 63"},
		{"label key alphabet", func(s *fedv1.ExportedService) { s.ExportedLabels = map[string]string{"a b": "x"} },
			"svc.exported_labels", "beginning and ending"},
		{"long label value", func(s *fedv1.ExportedService) { s.ExportedLabels = map[string]string{"a": strings.Repeat("v", 64)} },
			"svc.exported_labels[a]", "at most 63"},
		{"label value alphabet", func(s *fedv1.ExportedService) { s.ExportedLabels = map[string]string{"a": "-v"} },
			"svc.exported_labels[a]", "label value"},
		{"too many exported annotations", func(s *fedv1.ExportedService) {
			s.ExportedAnnotations = map[string]string{}
			for i := range fedv1.MaxExportedAnnotations + 1 {
				s.ExportedAnnotations[fmt.Sprint("a", i)] = ""
			}
		}, "svc.exported_annotations", "at most 64"},
		{"annotation key", func(s *fedv1.ExportedService) { s.ExportedAnnotations = map[string]string{"/a": "x"} },
			"svc.exported_annotations", "prefix must be 1 to 253"},
		{"annotations too large", func(s *fedv1.ExportedService) {
			s.ExportedAnnotations = map[string]string{"a": strings.Repeat("x", 40<<10), "b": strings.Repeat("x", 30<<10)}
		}, "svc.exported_annotations", "at most 65536"},
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

// Kubernetes' own patterns for qualified names and label values, which
// the fuzzer checks the hand-written checks against.
var (
	refQualifiedName = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	refLabelValue    = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

func refSpecValid(svc *fedv1.ExportedService) bool {
	fams := svc.GetIpFamilies()
	if len(fams) > 2 || len(fams) == 2 && fams[0] == fams[1] {
		return false
	}
	for _, f := range fams {
		if f != "IPv4" && f != "IPv6" {
			return false
		}
	}
	key := func(k string) bool {
		prefix, name, ok := strings.Cut(k, "/")
		if !ok {
			prefix, name = "", k
		}
		return refQualifiedName.MatchString(k) && len(prefix) <= 253 && len(name) <= 63
	}
	for k, v := range svc.GetExportedLabels() {
		if !key(k) || !refLabelValue.MatchString(v) || len(v) > 63 {
			return false
		}
	}
	for k := range svc.GetExportedAnnotations() {
		if !key(k) {
			return false
		}
	}
	return true
}

// The largest export within every limit but headless endpoints (long
// port names and app protocols, every endpoint group full of labels, the
// most exported labels and annotations) still fits the encoded bound.
func TestLargestExportWithoutHeadlessEndpointsIsValid(t *testing.T) {
	svc := &fedv1.ExportedService{Namespace: strings.Repeat("n", 63), Name: strings.Repeat("s", 63), IpFamilies: []string{"IPv4", "IPv6"},
		InternalTrafficPolicy: "Cluster", TrafficDistribution: strings.Repeat("P", fedv1.MaxTrafficDistributionLength),
		SessionAffinity: "ClientIP", SessionAffinityTimeoutSeconds: fedv1.MaxSessionAffinitySec,
		ExportedLabels: map[string]string{}, ExportedAnnotations: map[string]string{}}
	for i := range fedv1.MaxPortsPerService {
		svc.Ports = append(svc.Ports, &fedv1.ServicePort{Name: fmt.Sprintf("%02d%s", i, strings.Repeat("p", 61)), Port: uint32(1 + i), Protocol: "GRPC",
			AppProtocol: strings.Repeat("a", fedv1.MaxAppProtocolLength)})
	}
	for i := range fedv1.MaxEndpointGroups {
		g := &fedv1.EndpointGroup{Zone: fmt.Sprintf("%03d%s", i, strings.Repeat("z", federation.MaxLocalityPartLength-3)), Ready: fedv1.MaxCount,
			Serving: fedv1.MaxCount, Terminating: fedv1.MaxCount, Labels: map[string]string{}}
		for j := range fedv1.MaxLabels {
			g.Labels[fmt.Sprintf("%02d%s", j, strings.Repeat("k", fedv1.MaxLabelKeyLength-2))] = strings.Repeat("v", fedv1.MaxLabelValueLength)
		}
		svc.Endpoints = append(svc.Endpoints, g)
	}
	prefix := strings.Repeat(strings.Repeat("d", 63)+".", 3) + strings.Repeat("d", 61) // 253
	for i := range fedv1.MaxExportedLabels {
		svc.ExportedLabels[fmt.Sprintf("%s/%02d%s", prefix, i, strings.Repeat("k", 61))] = strings.Repeat("v", fedv1.MaxQualifiedNameLength)
	}
	per := fedv1.MaxExportedAnnotationsBytes / fedv1.MaxExportedAnnotations
	for i := range fedv1.MaxExportedAnnotations {
		k := fmt.Sprintf("a%02d", i)
		svc.ExportedAnnotations[k] = strings.Repeat("x", per-len(k))
	}
	if err := fedv1.ValidateExportedService("svc", svc); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes encoded, bound %d", proto.Size(svc), fedv1.MaxExportedServiceBytes)
}

func FuzzValidateExportedService(f *testing.F) {
	seed := validSvc()
	seed.Headless = true
	seed.HeadlessEndpoints = []*fedv1.HeadlessEndpoint{{Hostname: "a", Addresses: []string{"10.0.0.1", "::1"}, TargetPorts: map[string]uint32{"dns": 53}}}
	spec := validSvc()
	spec.IpFamilies, spec.InternalTrafficPolicy, spec.TrafficDistribution = []string{"IPv4", "IPv6"}, "Local", "PreferClose"
	spec.ExportedLabels = map[string]string{"example.com/app": "web"}
	spec.ExportedAnnotations = map[string]string{"note": "x"}
	for _, s := range []*fedv1.ExportedService{validSvc(), seed, spec, {Namespace: "a", Name: "b", Ports: []*fedv1.ServicePort{port("x", 1, "TCP"), port("y", 1, "HTTP")}}} {
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
		if !refSpecValid(&svc) {
			t.Fatalf("accepted %v, whose IP families, exported label or annotation keys or label values Kubernetes would refuse", &svc)
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
