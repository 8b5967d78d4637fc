package devenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// The control API: a running meshfed dev serves it on loopback (dev.json:
// control.address, port base+30) for `meshfed dev fail` and `meshfed dev
// heal`. Every request carries the bearer token of dev.json
// (control.token, new at every start; dev.json is readable by its owner
// only). JSON in and out:
//
//	POST /v1/fail  ControlRequest{cluster, what}  -> ControlReply
//	POST /v1/heal  ControlRequest{[cluster], [what]} -> ControlReply
//	GET  /v1/failures                             -> ControlReply
//
// A rejected request is answered 400 with a ControlError naming the field;
// a request before the federation is ready, 503.

// ControlRequest is the body of /v1/fail and /v1/heal.
type ControlRequest struct {
	// Cluster is required to fail; to heal, empty means every cluster.
	Cluster string `json:"cluster,omitempty"`
	// What is required to fail; to heal, empty means every fault.
	What Fault `json:"what,omitempty"`
}

// ControlReply is every answer of the control API.
type ControlReply struct {
	// Changed are the faults this request put into force or ended.
	Changed []Failure `json:"changed"`
	// Failures are the faults in force after it.
	Failures []Failure `json:"failures"`
}

// ControlError is the body of an error answer.
type ControlError struct {
	// Field, Value and Reason are set for a rejected field (400).
	Field  string `json:"field,omitempty"`
	Value  string `json:"value,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Message is set otherwise.
	Message string `json:"message,omitempty"`
}

// Control is dev.json's description of the control API.
type Control struct {
	Address string `json:"address"`
	Token   string `json:"token"`
}

// controlTimeout bounds a fail or heal: processes to stop or start.
const controlTimeout = 20 * time.Second

// newControlToken returns a random bearer token.
func newControlToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// controlHandler serves the control API.
func (e *Env) controlHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/fail", func(w http.ResponseWriter, r *http.Request) {
		req, ok := decodeControl(w, r)
		if !ok {
			return
		}
		var errs []error
		cluster, err := federation.ParseClusterName(req.Cluster)
		errs = append(errs, err)
		_, err = ParseFault(string(req.What))
		errs = append(errs, err)
		if err := errors.Join(errs...); err != nil {
			writeControlError(w, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), controlTimeout)
		defer cancel()
		added, err := e.Fail(ctx, cluster, req.What)
		if err != nil {
			writeControlError(w, err)
			return
		}
		rep := ControlReply{Changed: []Failure{}, Failures: e.Failures()}
		if added {
			rep.Changed = append(rep.Changed, Failure{Cluster: cluster.String(), What: req.What})
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/heal", func(w http.ResponseWriter, r *http.Request) {
		req, ok := decodeControl(w, r)
		if !ok {
			return
		}
		var cluster federation.ClusterName
		if req.Cluster != "" {
			c, err := federation.ParseClusterName(req.Cluster)
			if err != nil {
				writeControlError(w, err)
				return
			}
			cluster = c
		}
		ctx, cancel := context.WithTimeout(r.Context(), controlTimeout)
		defer cancel()
		healed, err := e.Heal(ctx, cluster, req.What)
		if err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ControlReply{Changed: append([]Failure{}, healed...), Failures: e.Failures()})
	})
	mux.HandleFunc("GET /v1/failures", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ControlReply{Changed: []Failure{}, Failures: e.Failures()})
	})
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeJSON(w, http.StatusUnauthorized, ControlError{Message: "the bearer token of " + FileName + " is required"})
			return
		}
		if !e.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, ControlError{Message: "the federation is not ready yet"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func decodeControl(w http.ResponseWriter, r *http.Request) (ControlRequest, bool) {
	var req ControlRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, ControlError{Message: "request body: " + err.Error()})
		return req, false
	}
	return req, true
}

// writeControlError answers a *federation.FieldError (the first one of a
// joined error) 400, anything else 500.
func writeControlError(w http.ResponseWriter, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		err = j.Unwrap()[0]
	}
	var fe *federation.FieldError
	if errors.As(err, &fe) {
		writeJSON(w, http.StatusBadRequest, ControlError{Field: fe.Field, Value: fe.Value, Reason: fe.Reason})
		return
	}
	writeJSON(w, http.StatusInternalServerError, ControlError{Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrNotRunning is returned by the ControlClient when no meshfed dev runs
// on the state directory: there is no dev.json (none was ready there yet),
// or nothing answers at its control address.
var ErrNotRunning = errors.New("devenv: no meshfed dev is running on this state directory")

// ControlClient calls the control API of the meshfed dev running on a
// state directory.
type ControlClient struct {
	dir     string
	control Control
	hc      *http.Client
}

// NewControlClient reads dev.json in the state directory dir.
func NewControlClient(dir string) (*ControlClient, error) {
	f, err := ReadFile(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (start it with meshfed dev --state-dir %s)", ErrNotRunning, dir, FileName, dir)
	}
	if err != nil {
		return nil, err
	}
	if f.Control.Address == "" {
		return nil, fmt.Errorf("%w: %s/%s has no control address (written by an older meshfed dev?)", ErrNotRunning, dir, FileName)
	}
	return &ControlClient{dir: dir, control: f.Control, hc: &http.Client{Timeout: controlTimeout + 10*time.Second}}, nil
}

// Fail puts what into force in cluster.
func (c *ControlClient) Fail(ctx context.Context, cluster federation.ClusterName, what Fault) (*ControlReply, error) {
	return c.call(ctx, http.MethodPost, "/v1/fail", ControlRequest{Cluster: cluster.String(), What: what})
}

// Heal ends the faults in cluster (every cluster if zero) of kind what
// (every kind if "").
func (c *ControlClient) Heal(ctx context.Context, cluster federation.ClusterName, what Fault) (*ControlReply, error) {
	req := ControlRequest{What: what}
	if !cluster.IsZero() {
		req.Cluster = cluster.String()
	}
	return c.call(ctx, http.MethodPost, "/v1/heal", req)
}

// Failures returns the faults in force.
func (c *ControlClient) Failures(ctx context.Context) (*ControlReply, error) {
	return c.call(ctx, http.MethodGet, "/v1/failures", nil)
}

// call sends body (JSON, if not nil) and decodes the reply: a
// *federation.FieldError for a 400 naming a field.
func (c *ControlClient) call(ctx context.Context, method, path string, body any) (*ControlReply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.control.Address+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.control.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("%w: nothing answers at %s (%s/%s is from a run that ended)", ErrNotRunning, c.control.Address, c.dir, FileName)
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var ce ControlError
		if err := json.Unmarshal(b, &ce); err != nil {
			return nil, fmt.Errorf("devenv: control %s: %s: %q", path, resp.Status, b)
		}
		if ce.Field != "" {
			return nil, &federation.FieldError{Field: ce.Field, Value: ce.Value, Reason: ce.Reason}
		}
		return nil, fmt.Errorf("devenv: control %s: %s: %s", path, resp.Status, ce.Message)
	}
	var rep ControlReply
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("devenv: control %s: %w", path, err)
	}
	return &rep, nil
}
