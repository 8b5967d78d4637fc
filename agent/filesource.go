package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// FileCatalog is the file source's YAML document. See the package doc.
type FileCatalog struct {
	Services []FileService `json:"services"`
	// Workloads name who calls from which address, for policies that
	// authorize by service account (pods, under the kubernetes source).
	Workloads []FileWorkload `json:"workloads,omitempty"`
}

// FileWorkload is one caller of a FileCatalog: the address its
// connections come from and the service account it runs as.
type FileWorkload struct {
	Address        string `json:"address"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// FileService is one local service of a FileCatalog.
type FileService struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Export    bool           `json:"export"`
	Ports     []FilePort     `json:"ports"`
	Endpoints []FileEndpoint `json:"endpoints,omitempty"`
}

// FilePort is one port of a FileService.
type FilePort struct {
	Name        string `json:"name,omitempty"`
	Port        uint32 `json:"port"`
	Protocol    string `json:"protocol"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// FileEndpoint is one endpoint of a FileService. Serving defaults to Ready.
// Address is host:port, the target of the service's first port; Ports
// gives the target port of others by port name.
type FileEndpoint struct {
	Address     string            `json:"address"`
	Ports       map[string]uint32 `json:"ports,omitempty"`
	Zone        string            `json:"zone,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Ready       bool              `json:"ready"`
	Serving     *bool             `json:"serving,omitempty"`
	Terminating bool              `json:"terminating,omitempty"`
}

// Limits of the file source.
const (
	MaxCatalogFileBytes  = 16 << 20
	MaxFileServices      = MaxExports
	MaxEndpointsPerEntry = 4096
)

// ParseFileCatalog strictly decodes and validates a catalog document. The
// error names the field path of the first problem, e.g.
// "services[2].ports[0].protocol".
func ParseFileCatalog(b []byte) (*FileCatalog, error) {
	if len(b) > MaxCatalogFileBytes {
		return nil, &federation.FieldError{Field: "file", Value: strconv.Itoa(len(b)), Reason: fmt.Sprintf("bytes, at most %d", MaxCatalogFileBytes)}
	}
	var c FileCatalog
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("agent: catalog: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *FileCatalog) validate() error {
	if len(c.Workloads) > gatewayv1.MaxWorkloads {
		return &federation.FieldError{Field: "workloads", Value: strconv.Itoa(len(c.Workloads)), Reason: fmt.Sprintf("workloads, at most %d", gatewayv1.MaxWorkloads)}
	}
	addrs := map[string]int{}
	for i, w := range c.Workloads {
		f := fmt.Sprintf("workloads[%d]", i)
		m := w.message()
		if err := gatewayv1.ValidateWorkload(f, m); err != nil {
			return err
		}
		if j, dup := addrs[m.GetAddress()]; dup {
			return &federation.FieldError{Field: f + ".address", Value: w.Address, Reason: fmt.Sprintf("duplicates workloads[%d]", j)}
		}
		addrs[m.GetAddress()] = i
	}
	if len(c.Services) > MaxFileServices {
		return &federation.FieldError{Field: "services", Value: strconv.Itoa(len(c.Services)), Reason: fmt.Sprintf("services, at most %d", MaxFileServices)}
	}
	seen := map[string]int{}
	for i, s := range c.Services {
		f := fmt.Sprintf("services[%d]", i)
		if _, err := federation.NewServiceKey(s.Namespace, s.Name); err != nil {
			var fe *federation.FieldError
			if errors.As(err, &fe) {
				return fe.WithPrefix(f)
			}
			return err
		}
		key := s.Namespace + "/" + s.Name
		if j, dup := seen[key]; dup {
			return &federation.FieldError{Field: f, Value: key, Reason: fmt.Sprintf("duplicates services[%d]", j)}
		}
		seen[key] = i
		if len(s.Endpoints) > MaxEndpointsPerEntry {
			return &federation.FieldError{Field: f + ".endpoints", Value: strconv.Itoa(len(s.Endpoints)), Reason: fmt.Sprintf("endpoints, at most %d", MaxEndpointsPerEntry)}
		}
		for j, e := range s.Endpoints {
			ef := fmt.Sprintf("%s.endpoints[%d]", f, j)
			host, port, err := net.SplitHostPort(e.Address)
			// ParseUint as local() parses it: Atoi took "+80", which
			// local() then turned into target port 0.
			if p, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || p < 1 || host == "" {
				return &federation.FieldError{Field: ef + ".address", Value: e.Address, Reason: "must be host:port"}
			}
			if len(e.Zone) > federation.MaxLocalityPartLength {
				return &federation.FieldError{Field: ef + ".zone", Value: e.Zone, Reason: fmt.Sprintf("at most %d characters", federation.MaxLocalityPartLength)}
			}
			if err := fedv1.ValidateLabels(ef+".labels", e.Labels); err != nil {
				return err
			}
			for name, p := range e.Ports {
				if !slices.ContainsFunc(s.Ports, func(sp FilePort) bool { return sp.Name == name }) {
					return &federation.FieldError{Field: ef + ".ports[" + name + "]", Value: name, Reason: "names no port of the service"}
				}
				if p < 1 || p > 65535 {
					return &federation.FieldError{Field: ef + ".ports[" + name + "]", Value: strconv.FormatUint(uint64(p), 10), Reason: "must be in 1..65535"}
				}
			}
		}
		// Ports, protocols and endpoint groups are checked as the hub
		// checks them, with this file's field names.
		if err := validateExport(f, s.exported()); err != nil {
			return err
		}
	}
	return nil
}

// exported is s as the hub's ExportedService.
func (s FileService) exported() *fedv1.ExportedService {
	out := &fedv1.ExportedService{Namespace: s.Namespace, Name: s.Name}
	for _, p := range s.Ports {
		out.Ports = append(out.Ports, &fedv1.ServicePort{Name: p.Name, Port: p.Port, Protocol: p.Protocol, AppProtocol: p.AppProtocol})
	}
	eps := make([]endpointHealth, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		serving := e.Ready
		if e.Serving != nil {
			serving = *e.Serving
		}
		eps = append(eps, endpointHealth{zone: e.Zone, labels: e.Labels, ready: e.Ready, serving: serving, terminate: e.Terminating})
	}
	out.Endpoints = groupEndpoints(eps)
	return out
}

// local is s with its endpoints, as the gateways see it. The catalog is
// valid (addresses are host:port).
func (s FileService) local() *gatewayv1.LocalService {
	out := &gatewayv1.LocalService{Service: s.Namespace + "/" + s.Name}
	for _, p := range s.Ports {
		out.Ports = append(out.Ports, &fedv1.ServicePort{Name: p.Name, Port: p.Port, Protocol: p.Protocol, AppProtocol: p.AppProtocol})
	}
	for _, e := range s.Endpoints {
		host, port, _ := net.SplitHostPort(e.Address)
		n, _ := strconv.ParseUint(port, 10, 16)
		ep := &gatewayv1.Endpoint{Address: host, Zone: e.Zone, Labels: e.Labels, Ready: e.Ready, Serving: e.Ready, Terminating: e.Terminating}
		if e.Serving != nil {
			ep.Serving = *e.Serving
		}
		for i, p := range s.Ports {
			target := uint32(n)
			if t, ok := e.Ports[p.Name]; ok {
				target = t
			} else if i > 0 {
				continue // only the first port defaults to the address's port
			}
			ep.Ports = append(ep.Ports, &gatewayv1.EndpointPort{Name: p.Name, Port: target})
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	out.Endpoints, _ = sortEndpoints(out.Endpoints)
	return out
}

// catalog is the set the agent publishes, services with export: true, and
// their endpoints.
// message is w as the gateways get it (the address in its canonical form).
func (w FileWorkload) message() *gatewayv1.Workload {
	addr := w.Address
	if a, err := netip.ParseAddr(addr); err == nil {
		addr = a.Unmap().String()
	}
	return &gatewayv1.Workload{Address: addr, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

func (c *FileCatalog) catalog() catalog {
	out := newCatalog()
	out.workloads = make(map[string]*gatewayv1.Workload, len(c.Workloads))
	for _, w := range c.Workloads {
		m := w.message()
		out.workloads[m.GetAddress()] = m
	}
	for _, s := range c.Services {
		if s.Export {
			out.exports[s.Namespace+"/"+s.Name] = s.exported()
			out.local[s.Namespace+"/"+s.Name] = s.local()
		}
	}
	return out
}

// fileSource polls a catalog file. A file that fails to parse or validate
// is rejected with its field path and the last good content keeps serving;
// a missing file at start is an error, and later a missing file keeps the
// last good content too.
type fileSource struct {
	path     string
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	lastErr string
}

var (
	_ catalogSource = (*fileSource)(nil)
	_ sourceStatus  = (*fileSource)(nil)
)

func newFileSource(path string, interval time.Duration, log *slog.Logger) *fileSource {
	return &fileSource{path: path, interval: interval, log: log}
}

func (s *fileSource) status() sourceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sourceState{Kind: "file", LastError: s.lastErr}
}

func (s *fileSource) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastErr = ""
		return
	}
	s.lastErr = err.Error()
}

func (s *fileSource) Run(ctx context.Context, update func(catalog)) error {
	var last []byte
	var lastMod time.Time
	var lastSize int64 = -1
	loaded := false
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		fi, err := os.Stat(s.path)
		switch {
		case err != nil:
			s.setErr(fmt.Errorf("agent: catalog %s: %w", s.path, err))
		case fi.ModTime().Equal(lastMod) && fi.Size() == lastSize:
			// unchanged
		case fi.Size() > MaxCatalogFileBytes:
			s.setErr(fmt.Errorf("agent: catalog %s: %d bytes, at most %d", s.path, fi.Size(), MaxCatalogFileBytes))
		default:
			b, err := os.ReadFile(s.path)
			if err != nil {
				s.setErr(fmt.Errorf("agent: catalog %s: %w", s.path, err))
				break
			}
			lastMod, lastSize = fi.ModTime(), fi.Size()
			if loaded && bytes.Equal(b, last) {
				break
			}
			c, err := ParseFileCatalog(b)
			if err != nil {
				s.setErr(fmt.Errorf("agent: catalog %s rejected, keeping the last good content: %w", s.path, err))
				s.log.Warn("catalog file rejected; the last good content keeps serving", "path", s.path, "err", err)
				break
			}
			s.setErr(nil)
			last = b
			loaded = true
			update(c.catalog())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
