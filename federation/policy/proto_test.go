package policy

import (
	"errors"
	"reflect"
	"testing"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"google.golang.org/protobuf/proto"
)

func TestToProtoFromProtoRoundTrip(t *testing.T) {
	p := fullPolicy()
	m, err := ToProto(p)
	if err != nil {
		t.Fatalf("ToProto: %v", err)
	}
	if m.GetName() != "reviews" || m.GetService() != "default/reviews" {
		t.Errorf("ToProto name, service = %q, %q; want reviews, default/reviews", m.GetName(), m.GetService())
	}
	canon, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.GetSpec()) != string(canon) {
		t.Errorf("ToProto spec is not Marshal(p)")
	}
	// Through the wire encoding, as the hub stores it.
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	m2 := new(fedv1.TrafficPolicy)
	if err := proto.Unmarshal(wire, m2); err != nil {
		t.Fatal(err)
	}
	got, err := FromProto(m2)
	if err != nil {
		t.Fatalf("FromProto: %v", err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Errorf("FromProto(ToProto(p)) differs from p")
	}
}

func TestFromProtoRefusesAMessageThatDisagreesWithItsDocument(t *testing.T) {
	good, err := ToProto(fullPolicy())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		mutate    func(m *fedv1.TrafficPolicy)
		path, msg string
	}{
		{"name differs", func(m *fedv1.TrafficPolicy) { m.Name = "ratings" }, "name", `is "ratings" but the document's metadata.name is "reviews"`},
		{"service differs", func(m *fedv1.TrafficPolicy) { m.Service = "prod/reviews" }, "service", `is "prod/reviews" but the document's spec.host "reviews.default" is service "default/reviews"`},
		{"spec invalid", func(m *fedv1.TrafficPolicy) { m.Spec = doc(`"http":[{"timeout":"2h"}]`) }, "spec.http[0].timeout", "must be from 1ms to 1h, got 2h"},
		{"spec missing", func(m *fedv1.TrafficPolicy) { m.Spec = nil }, "", "the policy is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := proto.Clone(good).(*fedv1.TrafficPolicy)
			tt.mutate(m)
			p, err := FromProto(m)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path != tt.path || fe.Msg != tt.msg {
				t.Fatalf("FromProto = %v, %v; want error %s: %s", p, err, tt.path, tt.msg)
			}
		})
	}
	if _, err := FromProto(nil); err == nil {
		t.Error("FromProto(nil) succeeded")
	}
}
