package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/requestid"
)

// request wraps a command in a Request with id, taken at nowMs; its
// fingerprint is the wrapped command's hash.
func request(t testing.TB, id string, nowMs int64, typ fsm.MessageType, msg proto.Message) *hubpb.CmdRequest {
	t.Helper()
	inner := encode(t, typ, msg)
	fp := sha256.Sum256(inner)
	return &hubpb.CmdRequest{RequestId: id, Fingerprint: fp[:], NowMs: nowMs, Type: uint32(inner[0]), Payload: inner[1:]}
}

func (h *testFSM) applyRequest(id string, nowMs int64, typ fsm.MessageType, msg proto.Message) *fsm.Result {
	h.t.Helper()
	return h.applyRaw(encode(h.t, fsm.RequestType, request(h.t, id, nowMs, typ, msg)))
}

func TestRepeatedRequestTakesEffectOnceAndGetsTheSameResult(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	rotate := &hubpb.CmdRotateCA{Cluster: "east"}

	first := h.applyRequest("rotate-east-00001", 1000, fsm.RotateCAType, rotate)
	if first.Err != nil || first.Duplicate || first.CARotation != 1 || first.Index != h.idx {
		t.Fatalf("first RotateCA: %s, want OK, rotation 1 at index %d", resultKey(first), h.idx)
	}
	rev := h.read().Revision()
	watch := h.Store().Watch()
	for i := range 3 {
		again := h.applyRequest("rotate-east-00001", 1000+int64(i), fsm.RotateCAType, rotate)
		if !again.Duplicate || again.Err != nil || again.Index != first.Index || again.CARotation != 1 || !proto.Equal(again.Request, first.Request) {
			t.Fatalf("repeat %d: %s, want the first result (%s) as a duplicate", i, resultKey(again), resultKey(first))
		}
	}
	if got := h.read().Cluster("east").GetCaRotation(); got != 1 {
		t.Fatalf("ca_rotation %d after one request applied four times, want 1", got)
	}
	if h.read().Revision() != rev || closed(watch) {
		t.Error("a repeated request moved the revision or woke watchers")
	}
	if h.AppliedIndex() != h.idx {
		t.Errorf("AppliedIndex %d, want %d: repeats still advance it", h.AppliedIndex(), h.idx)
	}

	// Another ID is another request.
	if r := h.applyRequest("rotate-east-00002", 2000, fsm.RotateCAType, rotate); r.Err != nil || r.Duplicate || r.CARotation != 2 {
		t.Fatalf("second request: %s, want OK, rotation 2", resultKey(r))
	}

	// CreateToken: the repeat answers with the token as first stored.
	tok := token("0123456789abcdef", "west", 3000, 9000)
	tok.HubAddrs = []string{"10.0.0.1:7400", "10.0.0.2:7400"}
	created := h.applyRequest("create-west-00001", 3000, fsm.CreateTokenType, tok)
	if created.Err != nil || !proto.Equal(created.Token, tok.GetToken()) {
		t.Fatalf("CreateToken: %s, token %v", resultKey(created), created.Token)
	}
	again := h.applyRequest("create-west-00001", 3500, fsm.CreateTokenType, tok)
	if !again.Duplicate || again.Err != nil || !proto.Equal(again.Token, tok.GetToken()) || again.Index != created.Index ||
		fmt.Sprint(again.TokenAddrs) != fmt.Sprint(tok.HubAddrs) {
		t.Fatalf("repeated CreateToken: %s, want the first token as a duplicate", resultKey(again))
	}
	if n := len(h.read().Tokens()); n != 2 {
		t.Errorf("%d tokens, want 2 (east's and west's)", n)
	}
}

func TestRefusedRequestIsRecordedAndRepeatedAsRefused(t *testing.T) {
	h := newTestFSM(t)
	rev := h.read().Revision()
	rotate := &hubpb.CmdRotateCA{Cluster: "east"}
	r := h.applyRequest("rotate-east-00001", 1000, fsm.RotateCAType, rotate)
	wantCode(t, "RotateCA of a cluster not joined", r.Err, codes.NotFound)
	if h.read().Revision() != rev {
		t.Error("a refused request moved the revision")
	}
	if h.read().Request("rotate-east-00001").GetErrorCode() != uint32(codes.NotFound) {
		t.Fatalf("refusal not recorded: %v", h.read().Request("rotate-east-00001"))
	}
	// The cluster joins meanwhile; the repeat is still the recorded answer:
	// a request takes effect at most once, at the time it was first applied.
	h.joined("east")
	again := h.applyRequest("rotate-east-00001", 1500, fsm.RotateCAType, rotate)
	wantCode(t, "repeat", again.Err, codes.NotFound)
	if !again.Duplicate || again.Err.Msg != r.Err.Msg || again.Index != r.Index {
		t.Fatalf("repeat: %s, want %s as a duplicate", resultKey(again), resultKey(r))
	}
	if got := h.read().Cluster("east").GetCaRotation(); got != 0 {
		t.Errorf("ca_rotation %d, want 0", got)
	}
}

func TestRequestIDReusedForAnotherRequestIsRefused(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	h.joined("west")
	first := h.applyRequest("shared-id-0000001", 1000, fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: "east"})
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	for name, c := range map[string]*hubpb.CmdRequest{
		"another cluster": request(t, "shared-id-0000001", 1100, fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: "west"}),
		"another command": request(t, "shared-id-0000001", 1100, fsm.RemoveClusterType, &hubpb.CmdRemoveCluster{Name: "east"}),
	} {
		r := h.applyRaw(encode(t, fsm.RequestType, c))
		wantCode(t, name, r.Err, codes.InvalidArgument)
		t.Logf("%s: %v", name, r.Err)
	}
	if h.read().Cluster("west").GetCaRotation() != 0 || h.read().Cluster("east") == nil {
		t.Error("a request with a reused ID took effect")
	}
	if rec := h.read().Request("shared-id-0000001"); !proto.Equal(rec, first.Request) {
		t.Errorf("record replaced: %v, want %v", rec, first.Request)
	}
}

func TestMalformedRequestsAreRefused(t *testing.T) {
	h := newTestFSM(t)
	inner := encode(t, fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: "east"})
	nested, err := fsm.EncodeRequest("nested-request-001", nil, 1, inner)
	if err != nil {
		t.Fatal(err)
	}
	long := string(bytes.Repeat([]byte{'a'}, fsm.MaxRequestIDBytes+1))
	for name, c := range map[string]*hubpb.CmdRequest{
		"no ID":           {Type: uint32(fsm.RotateCAType), Payload: inner[1:]},
		"ID too long":     {RequestId: long, Type: uint32(fsm.RotateCAType), Payload: inner[1:]},
		"nested":          {RequestId: "outer-request-001", Type: uint32(fsm.RequestType), Payload: nested[1:]},
		"type above 255":  {RequestId: "wide-type-request", Type: 300, Payload: inner[1:]},
		"bad payload":     {RequestId: "bad-payload-00001", Type: uint32(fsm.RotateCAType), Payload: []byte{0xff}},
		"nested, flagged": {RequestId: "outer-request-002", Type: uint32(fsm.RequestType | fsm.IgnoreUnknownFlag), Payload: nested[1:]},
	} {
		wantCode(t, name, h.applyRaw(encode(t, fsm.RequestType, c)).Err, codes.InvalidArgument)
	}
	// A request of an unknown type without the ignore flag stops the server,
	// as the bare command would.
	defer func() {
		if recover() == nil {
			t.Error("a request wrapping an unknown command type did not panic")
		}
	}()
	h.applyRaw(encode(t, fsm.RequestType, &hubpb.CmdRequest{RequestId: "unknown-type-0001", Type: 99}))
}

func TestRequestRecordsExpireByCommandTime(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	rotate := &hubpb.CmdRotateCA{Cluster: "east"}
	ttl := fsm.RequestTTL.Milliseconds()
	h.applyRequest("rotate-east-00001", 1000, fsm.RotateCAType, rotate)
	if r := h.applyRequest("rotate-east-00001", 1000+ttl-1, fsm.RotateCAType, rotate); !r.Duplicate {
		t.Fatalf("repeat 1 ms before expiry: %s, want a duplicate", resultKey(r))
	}
	// At expiry the ID is new again: applied, and recorded afresh.
	r := h.applyRequest("rotate-east-00001", 1000+ttl, fsm.RotateCAType, rotate)
	if r.Duplicate || r.Err != nil || r.CARotation != 2 || r.Request.GetAppliedAtMs() != 1000+ttl {
		t.Fatalf("repeat at expiry: %s, want applied again (rotation 2)", resultKey(r))
	}

	// Expired records are pruned by later requests, oldest first.
	t0 := 1000 + ttl
	h.applyRequest("other-request-0001", t0+1000, fsm.RotateCAType, rotate)
	h.applyRequest("other-request-0002", t0+2000, fsm.RotateCAType, rotate)
	if n := h.Store().RequestCount(); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
	h.applyRequest("late-request-0001", t0+2000+ttl, fsm.RotateCAType, rotate)
	var ids []string
	for _, rec := range h.read().Requests() {
		ids = append(ids, rec.GetRequestId())
	}
	if fmt.Sprint(ids) != "[late-request-0001 other-request-0002]" || h.Store().RequestCount() != 2 {
		t.Errorf("records after expiry %v (count %d), want [late-request-0001 other-request-0002]", ids, h.Store().RequestCount())
	}
}

func TestRequestRecordsAreBounded(t *testing.T) {
	h := newTestFSM(t)
	const extra = 25
	for i := range fsm.MaxRequests + extra {
		// Refusals are recorded too, and are the cheapest to make.
		h.applyRequest(fmt.Sprintf("bounded-%09d", i), 1000, fsm.DeletePolicyType, &hubpb.CmdDeletePolicy{Name: "p"})
	}
	r := h.read()
	if n := h.Store().RequestCount(); n != fsm.MaxRequests || len(r.Requests()) != fsm.MaxRequests {
		t.Fatalf("%d records (counted %d), want %d", len(r.Requests()), n, fsm.MaxRequests)
	}
	if r.Request(fmt.Sprintf("bounded-%09d", extra-1)) != nil || r.Request(fmt.Sprintf("bounded-%09d", extra)) == nil {
		t.Error("the bound did not drop the oldest records first")
	}
	// A dropped ID is new again.
	if res := h.applyRequest(fmt.Sprintf("bounded-%09d", 0), 1000, fsm.DeletePolicyType, &hubpb.CmdDeletePolicy{Name: "p"}); res.Duplicate {
		t.Error("a request whose record was dropped was answered as a duplicate")
	}
}

func TestRequestRecordsSurviveSnapshotAndRestore(t *testing.T) {
	h := newTestFSM(t)
	h.joined("east")
	rotate := &hubpb.CmdRotateCA{Cluster: "east"}
	first := h.applyRequest("rotate-east-00001", 1000, fsm.RotateCAType, rotate)
	h.applyRequest("rotate-north-0001", 1000, fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: "north"})

	f := restored(t, persist(t, h.FSM))
	sameFSM(t, h.FSM, f)
	if f.Store().RequestCount() != 2 {
		t.Fatalf("restored %d records, want 2", f.Store().RequestCount())
	}
	// The repeat reaches a server restored from the snapshot.
	data := encode(t, fsm.RequestType, request(t, "rotate-east-00001", 1200, fsm.RotateCAType, rotate))
	r := applyRaw(t, f, h.idx+1, data)
	if !r.Duplicate || r.Index != first.Index || r.CARotation != 1 {
		t.Fatalf("repeat after restore: %s, want the first result as a duplicate", resultKey(r))
	}
	if got := f.Store().Read().Cluster("east").GetCaRotation(); got != 1 {
		t.Errorf("ca_rotation %d after restore and repeat, want 1", got)
	}
}

// A snapshot written before requests were recorded (no request records) is
// read as having none.
func TestSnapshotWithoutRequestRecordsIsRead(t *testing.T) {
	var buf bytes.Buffer
	for _, rec := range []*hubpb.SnapshotRecord{
		{Rec: &hubpb.SnapshotRecord_Header{Header: &hubpb.SnapshotHeader{Format: 1, Revision: 7, AppliedIndex: 9}}},
		{Rec: &hubpb.SnapshotRecord_Token{Token: &hubpb.Token{Id: "t1", Cluster: "east"}}},
	} {
		if _, err := protodelim.MarshalTo(&buf, rec); err != nil {
			t.Fatal(err)
		}
	}
	f := newFSM(t)
	if err := f.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if n := f.Store().RequestCount(); n != 0 {
		t.Fatalf("%d records, want 0", n)
	}
	data := encode(t, fsm.RequestType, request(t, "after-restore-001", 1, fsm.RevokeTokenType, &hubpb.CmdRevokeToken{Id: "t1"}))
	if r := applyRaw(t, f, 10, data); r.Err != nil || r.Duplicate || !f.Store().Read().Token("t1").GetRevoked() {
		t.Fatalf("request after restoring an old snapshot: %s", resultKey(r))
	}
}

// The hub checks IDs with requestid before proposing; the FSM's backstop
// must accept every ID that passes.
func TestFSMAcceptsEveryValidRequestID(t *testing.T) {
	if requestid.MaxLength > fsm.MaxRequestIDBytes {
		t.Fatalf("requestid.MaxLength %d > fsm.MaxRequestIDBytes %d", requestid.MaxLength, fsm.MaxRequestIDBytes)
	}
}
