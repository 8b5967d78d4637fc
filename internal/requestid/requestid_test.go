package requestid

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func TestValidate(t *testing.T) {
	for _, id := range []string{New(), "0f8fad5b-d9cb-469f-a165-70867728950e", "job:nightly_2026.05.01", strings.Repeat("a", MaxLength), strings.Repeat("Z", MinLength)} {
		if err := Validate(id); err != nil {
			t.Errorf("Validate(%q): %v", id, err)
		}
	}
	for id, want := range map[string]string{
		"":                           "is 0 characters, want 16 to 128",
		"fifteen-chars-x":            "is 15 characters, want 16 to 128",
		strings.Repeat("a", 129):     "is 129 characters, want 16 to 128",
		"has space in the middle":    `has ' ' at offset 3`,
		"slash/is-not-allowed-here":  `has '/' at offset 5`,
		"ünïcode-is-not-allowed-xxx": "at offset 0",
	} {
		err := Validate(id)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.ID != id {
			t.Errorf("Validate(%.20q) = %v, want an *Error matching ErrInvalid", id, err)
			continue
		}
		if !strings.Contains(err.Error(), MetadataKey) || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%.20q) = %q, want it to name %s and say %q", id, err, MetadataKey, want)
		}
	}
	if a, b := New(), New(); a == b || len(a) != 32 {
		t.Errorf("New() gave %q and %q, want two different 32-character IDs", a, b)
	}
}

// Every Admin method is either a write, retried with a request ID, or a
// read (which changes nothing, so a retry needs no ID).
func TestEveryAdminMethodIsAWriteOrARead(t *testing.T) {
	// Methods that change no state although their names do not say so.
	changeNothing := map[string]bool{
		"CreateUILogin": true, // signs a login token from the hub CA key; writes nothing (a retry signs another)
	}
	for _, m := range fedv1.Admin_ServiceDesc.Methods {
		full := "/" + fedv1.Admin_ServiceDesc.ServiceName + "/" + m.MethodName
		read := strings.HasPrefix(m.MethodName, "List") || strings.HasPrefix(m.MethodName, "Describe") ||
			strings.HasSuffix(m.MethodName, "Status") || changeNothing[m.MethodName]
		write := false
		for _, w := range AdminWrites {
			write = write || w == full
		}
		if read == write {
			t.Errorf("%s: read %v, in AdminWrites %v; want exactly one", full, read, write)
		}
	}
}

// flakyAdmin fails its first `fail` CreateToken calls with code, and
// records the request ID of every call.
type flakyAdmin struct {
	fedv1.UnimplementedAdminServer
	code codes.Code

	mu   sync.Mutex
	fail int
	ids  []string
}

func (f *flakyAdmin) record(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, strings.Join(md.Get(MetadataKey), ","))
	f.fail--
	return f.fail >= 0
}

func (f *flakyAdmin) CreateToken(ctx context.Context, _ *fedv1.CreateTokenRequest) (*fedv1.CreateTokenResponse, error) {
	if f.record(ctx) {
		return nil, status.Error(f.code, "test: not now")
	}
	return &fedv1.CreateTokenResponse{Token: "the-token"}, nil
}

func (f *flakyAdmin) ListTokens(ctx context.Context, _ *fedv1.ListTokensRequest) (*fedv1.ListTokensResponse, error) {
	if f.record(ctx) {
		return nil, status.Error(f.code, "test: not now")
	}
	return &fedv1.ListTokensResponse{}, nil
}

func (f *flakyAdmin) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

// serve runs f on loopback and returns a client whose connection has
// RetryWrites with policy p.
func serve(t *testing.T, f *flakyAdmin, p RetryPolicy) fedv1.AdminClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fedv1.RegisterAdminServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(RetryWrites(AdminWrites, p)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return fedv1.NewAdminClient(conn)
}

var fast = RetryPolicy{MaxAttempts: 4, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestWriteIsRetriedOnUnavailableWithOneRequestID(t *testing.T) {
	f := &flakyAdmin{code: codes.Unavailable, fail: 2}
	resp, err := serve(t, f, fast).CreateToken(ctxT(t, 10*time.Second), &fedv1.CreateTokenRequest{Cluster: "west"})
	if err != nil || resp.GetToken() != "the-token" {
		t.Fatalf("CreateToken: %v, %v", resp, err)
	}
	ids := f.seen()
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] || Validate(ids[0]) != nil {
		t.Fatalf("request IDs of the attempts: %q, want three of one valid ID", ids)
	}

	// Each call is a new request, with a new ID.
	if _, err := serve(t, f, fast).CreateToken(ctxT(t, 10*time.Second), &fedv1.CreateTokenRequest{Cluster: "west"}); err != nil {
		t.Fatal(err)
	}
	if ids = f.seen(); ids[3] == ids[0] {
		t.Errorf("two calls shared the request ID %q", ids[0])
	}

	// An ID the caller set is kept.
	ctx := NewOutgoingContext(ctxT(t, 10*time.Second), "caller-chosen-id-0001")
	f.mu.Lock()
	f.fail = 1
	f.mu.Unlock()
	if _, err := serve(t, f, fast).CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "west"}); err != nil {
		t.Fatal(err)
	}
	if ids = f.seen(); ids[4] != "caller-chosen-id-0001" || ids[5] != "caller-chosen-id-0001" {
		t.Errorf("attempts carried %q, want the caller's ID twice", ids[4:])
	}
}

func TestWriteRetriesAreBounded(t *testing.T) {
	f := &flakyAdmin{code: codes.Unavailable, fail: 100}
	_, err := serve(t, f, fast).CreateToken(ctxT(t, 10*time.Second), &fedv1.CreateTokenRequest{Cluster: "west"})
	ids := f.seen()
	if status.Code(err) != codes.Unavailable || len(ids) != fast.MaxAttempts {
		t.Fatalf("%v after %d attempts, want Unavailable after %d", err, len(ids), fast.MaxAttempts)
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, "test: not now") || !strings.Contains(msg, ids[0]) || !strings.Contains(msg, "outcome is unknown") {
		t.Errorf("final error %q should keep the server's message, name the request ID %s and say the outcome is unknown", msg, ids[0])
	}

	// No retry past the deadline: a wait that would outlast it is not begun.
	f = &flakyAdmin{code: codes.Unavailable, fail: 100}
	slow := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	start := time.Now()
	_, err = serve(t, f, slow).CreateToken(ctxT(t, 2*time.Second), &fedv1.CreateTokenRequest{Cluster: "west"})
	if status.Code(err) != codes.Unavailable || len(f.seen()) != 1 || time.Since(start) > time.Second {
		t.Fatalf("%v after %d attempts in %v, want Unavailable after 1 at once", err, len(f.seen()), time.Since(start))
	}
}

func TestOnlyUnavailableWritesAreRetried(t *testing.T) {
	f := &flakyAdmin{code: codes.FailedPrecondition, fail: 1}
	_, err := serve(t, f, fast).CreateToken(ctxT(t, 10*time.Second), &fedv1.CreateTokenRequest{Cluster: "west"})
	if status.Code(err) != codes.FailedPrecondition || len(f.seen()) != 1 || status.Convert(err).Message() != "test: not now" {
		t.Fatalf("%v after %d attempts, want the FailedPrecondition unchanged after 1", err, len(f.seen()))
	}
	// Reads pass through: no ID, no retry here (the service config retries them).
	f = &flakyAdmin{code: codes.Unavailable, fail: 1}
	_, err = serve(t, f, fast).ListTokens(ctxT(t, 10*time.Second), &fedv1.ListTokensRequest{})
	if status.Code(err) != codes.Unavailable || len(f.seen()) != 1 || f.seen()[0] != "" {
		t.Fatalf("ListTokens: %v, IDs %q; want one attempt without an ID", err, f.seen())
	}
}
