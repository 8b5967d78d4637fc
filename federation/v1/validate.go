package federationv1

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
)

// Limits on one ExportedService. The agent checks them before it
// publishes and the hub when it receives, with the one function below.
const (
	MaxPortsPerService    = 64
	MaxEndpointGroups     = 256
	MaxLabels             = 32
	MaxLabelKeyLength     = 63
	MaxLabelValueLength   = 253
	MaxAppProtocolLength  = 253
	MaxCount              = 1 << 20
	MaxHeadlessEndpoints  = 1000 // one EndpointSlice's worth
	MaxEndpointAddresses  = 2    // one per IP family
	MaxSessionAffinitySec = 86400
	MaxIPFamilies         = 2 // IPv4 and IPv6
	// MaxTrafficDistributionLength bounds traffic_distribution (the
	// values Kubernetes defines are PreferClose, PreferSameZone and
	// PreferSameNode; later ones are carried as they come).
	MaxTrafficDistributionLength = 63
	// Exported labels and annotations are written on ServiceImports, so
	// they follow Kubernetes' rules: keys are qualified names (an
	// optional DNS subdomain prefix of at most MaxQualifiedPrefixLength
	// and "/", then a name of 1 to MaxQualifiedNameLength characters),
	// label values at most MaxQualifiedNameLength characters of the same
	// alphabet. The counts and the annotations' total size are ours.
	MaxExportedLabels           = 64
	MaxExportedAnnotations      = 64
	MaxQualifiedNameLength      = 63
	MaxQualifiedPrefixLength    = 253
	MaxExportedAnnotationsBytes = 64 << 10 // keys and values
	// MaxExportedServiceBytes bounds one export encoded, so that any
	// valid export fits one Sync message and one Raft command (4 MiB)
	// with room to spare. The largest export within the other limits
	// without headless endpoints is about 2.7 MiB (2.6 MiB of endpoint
	// groups, 88 KiB of exported labels and annotations).
	MaxExportedServiceBytes = 3 << 20
)

// Protocols are the values of ServicePort.protocol. UDP and SCTP run
// over themselves; every other one over TCP.
var Protocols = []string{"TCP", "UDP", "SCTP", "HTTP", "HTTP2", "GRPC", "TLS"}

// Transport is the layer-4 protocol a ServicePort protocol runs over:
// "UDP" for UDP, "SCTP" for SCTP, "TCP" for the others.
func Transport(protocol string) string {
	switch protocol {
	case "UDP", "SCTP":
		return protocol
	}
	return "TCP"
}

// ValidateExportedService checks one export as both the agent (before it
// shows the export Valid and publishes it) and the hub (before it stores
// it) do, so that the two cannot disagree. field prefixes the field path
// of the error ("publish.upserts[3]"). It returns nil or a
// *federation.FieldError naming the field, the value and the bound.
//
// The rules: namespace and name are a ServiceKey; 1 to MaxPortsPerService
// ports, each with a port in 1..65535, a protocol of Protocols, a name of
// at most federation.MaxNameLength characters (required when there are
// several ports, unique), and an app_protocol of at most
// MaxAppProtocolLength; no two ports share a port number and a transport
// (as Kubernetes keys Service ports: 53/TCP and 53/UDP may coexist); at most
// MaxEndpointGroups endpoint groups with a zone of at most
// federation.MaxLocalityPartLength, at most MaxLabels labels (keys 1 to
// MaxLabelKeyLength, values at most MaxLabelValueLength characters) and
// counts of at most MaxCount; session_affinity "", "None" or "ClientIP",
// a timeout in 0..MaxSessionAffinitySec and only with ClientIP; headless
// endpoints only when headless, at most MaxHeadlessEndpoints, each with 1
// to MaxEndpointAddresses IP addresses of distinct families, an empty or
// RFC 1123 label hostname, a zone as above and target ports (1..65535)
// named after the service's ports; at most MaxIPFamilies ip_families,
// each "IPv4" or "IPv6", distinct; internal_traffic_policy "", "Cluster"
// or "Local"; traffic_distribution of at most MaxTrafficDistributionLength
// characters; at most MaxExportedLabels exported labels and
// MaxExportedAnnotations exported annotations, under Kubernetes' rules
// for keys and label values (see MaxQualifiedNameLength), annotations of
// at most MaxExportedAnnotationsBytes in all; and at most
// MaxExportedServiceBytes encoded in all.
func ValidateExportedService(field string, svc *ExportedService) error {
	if _, err := federation.NewServiceKey(svc.GetNamespace(), svc.GetName()); err != nil {
		if fe, ok := err.(*federation.FieldError); ok {
			return fe.WithPrefix(field)
		}
		return err
	}
	inv := func(f, v, reason string, args ...any) error {
		return &federation.FieldError{Field: join(field, f), Value: v, Reason: fmt.Sprintf(reason, args...)}
	}
	ports := svc.GetPorts()
	if n := len(ports); n == 0 || n > MaxPortsPerService {
		return inv("ports", fmt.Sprint(n), "ports: want 1 to %d", MaxPortsPerService)
	}
	type portKey struct {
		port      uint32
		transport string
	}
	names := make(map[string]bool, len(ports))
	keys := make(map[portKey]int, len(ports))
	for i, p := range ports {
		pf := fmt.Sprintf("ports[%d]", i)
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			return inv(pf+".port", fmt.Sprint(p.GetPort()), "must be in 1..65535")
		}
		if !slices.Contains(Protocols, p.GetProtocol()) {
			return inv(pf+".protocol", p.GetProtocol(), "must be one of %s", strings.Join(Protocols, ", "))
		}
		k := portKey{p.GetPort(), Transport(p.GetProtocol())}
		if j, dup := keys[k]; dup {
			return inv(pf+".port", fmt.Sprint(p.GetPort()), "is listed twice for %s (ports[%d]); a port number may appear once per transport", k.transport, j)
		}
		keys[k] = i
		if len(p.GetName()) > federation.MaxNameLength {
			return inv(pf+".name", p.GetName(), "must be at most %d characters", federation.MaxNameLength)
		}
		if len(ports) > 1 && p.GetName() == "" {
			return inv(pf+".name", "", "is required when a service has several ports")
		}
		if names[p.GetName()] {
			return inv(pf+".name", p.GetName(), "is a duplicate port name")
		}
		names[p.GetName()] = true
		if len(p.GetAppProtocol()) > MaxAppProtocolLength {
			return inv(pf+".app_protocol", p.GetAppProtocol(), "must be at most %d characters", MaxAppProtocolLength)
		}
	}
	if n := len(svc.GetEndpoints()); n > MaxEndpointGroups {
		return inv("endpoints", fmt.Sprint(n), "endpoint groups: at most %d", MaxEndpointGroups)
	}
	for i, g := range svc.GetEndpoints() {
		gf := fmt.Sprintf("endpoints[%d]", i)
		if len(g.GetZone()) > federation.MaxLocalityPartLength {
			return inv(gf+".zone", g.GetZone(), "must be at most %d characters", federation.MaxLocalityPartLength)
		}
		if err := ValidateLabels(join(field, gf+".labels"), g.GetLabels()); err != nil {
			return err
		}
		for _, c := range []struct {
			name string
			n    uint32
		}{{"ready", g.GetReady()}, {"serving", g.GetServing()}, {"terminating", g.GetTerminating()}} {
			if c.n > MaxCount {
				return inv(gf+"."+c.name, fmt.Sprint(c.n), "must be at most %d", MaxCount)
			}
		}
	}
	switch svc.GetSessionAffinity() {
	case "", "None":
		if t := svc.GetSessionAffinityTimeoutSeconds(); t != 0 {
			return inv("session_affinity_timeout_seconds", fmt.Sprint(t), "must be 0 without ClientIP session affinity")
		}
	case "ClientIP":
		if t := svc.GetSessionAffinityTimeoutSeconds(); t < 0 || t > MaxSessionAffinitySec {
			return inv("session_affinity_timeout_seconds", fmt.Sprint(t), "must be in 0..%d", MaxSessionAffinitySec)
		}
	default:
		return inv("session_affinity", svc.GetSessionAffinity(), `must be "", "None" or "ClientIP"`)
	}
	eps := svc.GetHeadlessEndpoints()
	if len(eps) > 0 && !svc.GetHeadless() {
		return inv("headless_endpoints", fmt.Sprint(len(eps)), "must be empty unless headless is set")
	}
	if len(eps) > MaxHeadlessEndpoints {
		return inv("headless_endpoints", fmt.Sprint(len(eps)), "endpoints: at most %d", MaxHeadlessEndpoints)
	}
	for i, e := range eps {
		ef := fmt.Sprintf("headless_endpoints[%d]", i)
		if h := e.GetHostname(); h != "" && !federation.IsDNSLabel(h) {
			return inv(ef+".hostname", h, "must be empty or a lowercase RFC 1123 label of at most %d characters", federation.MaxNameLength)
		}
		addrs := e.GetAddresses()
		if n := len(addrs); n == 0 || n > MaxEndpointAddresses {
			return inv(ef+".addresses", fmt.Sprint(n), "addresses: want 1 to %d, one per IP family", MaxEndpointAddresses)
		}
		var v4, v6 bool
		for j, a := range addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.Zone() != "" || ip.Is4In6() {
				return inv(fmt.Sprintf("%s.addresses[%d]", ef, j), a, "must be an IPv4 or IPv6 address")
			}
			fam := &v6
			if ip.Is4() {
				fam = &v4
			}
			if *fam {
				return inv(fmt.Sprintf("%s.addresses[%d]", ef, j), a, "repeats an IP family; one address per family")
			}
			*fam = true
		}
		if len(e.GetZone()) > federation.MaxLocalityPartLength {
			return inv(ef+".zone", e.GetZone(), "must be at most %d characters", federation.MaxLocalityPartLength)
		}
		if n := len(e.GetTargetPorts()); n > len(ports) {
			return inv(ef+".target_ports", fmt.Sprint(n), "target ports: at most one per service port (%d)", len(ports))
		}
		for name, tp := range e.GetTargetPorts() {
			if !names[name] {
				return inv(ef+".target_ports", name, "names no port of the service")
			}
			if tp < 1 || tp > 65535 {
				return inv(ef+".target_ports["+name+"]", fmt.Sprint(tp), "must be in 1..65535")
			}
		}
	}
	if err := validateServiceSpec(field, svc); err != nil {
		return err
	}
	if n := proto.Size(svc); n > MaxExportedServiceBytes {
		f := field
		if f == "" {
			f = "service"
		}
		return &federation.FieldError{Field: f, Value: fmt.Sprint(n), Reason: fmt.Sprintf("bytes encoded: at most %d", MaxExportedServiceBytes)}
	}
	return nil
}

// ValidateLabels checks an endpoint group's (or a policy subset's) labels:
// at most MaxLabels, keys of 1 to MaxLabelKeyLength characters, values of
// at most MaxLabelValueLength characters. field is the path of the map.
func ValidateLabels(field string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return &federation.FieldError{Field: field, Value: fmt.Sprint(len(labels)), Reason: fmt.Sprintf("labels: at most %d", MaxLabels)}
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLength {
			return &federation.FieldError{Field: field, Value: k, Reason: fmt.Sprintf("is a key of %d characters, want 1 to %d", len(k), MaxLabelKeyLength)}
		}
		if len(v) > MaxLabelValueLength {
			return &federation.FieldError{Field: field + "[" + k + "]", Value: v, Reason: fmt.Sprintf("must be at most %d characters", MaxLabelValueLength)}
		}
	}
	return nil
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

// validateServiceSpec checks the fields copied onto the ServiceImport: IP
// families, traffic policies, exported labels and annotations.
func validateServiceSpec(field string, svc *ExportedService) error {
	inv := func(f, v, reason string, args ...any) error {
		return &federation.FieldError{Field: join(field, f), Value: v, Reason: fmt.Sprintf(reason, args...)}
	}
	fams := svc.GetIpFamilies()
	if len(fams) > MaxIPFamilies {
		return inv("ip_families", fmt.Sprint(len(fams)), "IP families: at most %d", MaxIPFamilies)
	}
	for i, f := range fams {
		if f != "IPv4" && f != "IPv6" {
			return inv(fmt.Sprintf("ip_families[%d]", i), f, `must be "IPv4" or "IPv6"`)
		}
		if i > 0 && fams[0] == f {
			return inv(fmt.Sprintf("ip_families[%d]", i), f, "repeats an IP family")
		}
	}
	switch p := svc.GetInternalTrafficPolicy(); p {
	case "", "Cluster", "Local":
	default:
		return inv("internal_traffic_policy", p, `must be "", "Cluster" or "Local"`)
	}
	if d := svc.GetTrafficDistribution(); len(d) > MaxTrafficDistributionLength {
		return inv("traffic_distribution", d, "must be at most %d characters", MaxTrafficDistributionLength)
	}
	lbl := svc.GetExportedLabels()
	if n := len(lbl); n > MaxExportedLabels {
		return inv("exported_labels", fmt.Sprint(n), "labels: at most %d", MaxExportedLabels)
	}
	for _, k := range sortedKeys(lbl) {
		if why := qualifiedNameProblem(k); why != "" {
			return inv("exported_labels", k, "is not a Kubernetes label key: %s", why)
		}
		if v := lbl[k]; v != "" && (len(v) > MaxQualifiedNameLength || !isQualifiedNamePart(v)) {
			return inv("exported_labels["+k+"]", v, "must be a Kubernetes label value: at most %d characters of A-Z, a-z, 0-9, '-', '_', '.', beginning and ending with a letter or digit", MaxQualifiedNameLength)
		}
	}
	ann := svc.GetExportedAnnotations()
	if n := len(ann); n > MaxExportedAnnotations {
		return inv("exported_annotations", fmt.Sprint(n), "annotations: at most %d", MaxExportedAnnotations)
	}
	size := 0
	for _, k := range sortedKeys(ann) {
		if why := qualifiedNameProblem(k); why != "" {
			return inv("exported_annotations", k, "is not a Kubernetes annotation key: %s", why)
		}
		size += len(k) + len(ann[k])
	}
	if size > MaxExportedAnnotationsBytes {
		return inv("exported_annotations", fmt.Sprint(size), "bytes of keys and values: at most %d", MaxExportedAnnotationsBytes)
	}
	return nil
}

// qualifiedNameProblem says why k is not a Kubernetes qualified name
// (label and annotation keys), or "".
func qualifiedNameProblem(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix {
		if prefix == "" || len(prefix) > MaxQualifiedPrefixLength {
			return fmt.Sprintf("the prefix must be 1 to %d characters", MaxQualifiedPrefixLength)
		}
		for _, l := range strings.Split(prefix, ".") {
			if !federation.IsDNSLabel(l) {
				return "the prefix must be a lowercase DNS subdomain"
			}
		}
	}
	if name == "" || len(name) > MaxQualifiedNameLength {
		return fmt.Sprintf("the name must be 1 to %d characters", MaxQualifiedNameLength)
	}
	if !isQualifiedNamePart(name) {
		return "the name must be A-Z, a-z, 0-9, '-', '_', '.', beginning and ending with a letter or digit"
	}
	return ""
}

// isQualifiedNamePart reports whether s is non-empty, of A-Z, a-z, 0-9,
// '-', '_' and '.', and begins and ends with a letter or digit.
func isQualifiedNamePart(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if s == "" || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// sortedKeys returns m's keys sorted, so that the first bad key reported
// is the same on every run.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
