package delta

import (
	"maps"
	"testing"
)

type rec struct {
	k string
	v int
}

func TestApplyUpsertsThenRemoves(t *testing.T) {
	m := map[string]rec{"a": {"a", 1}, "b": {"b", 1}}
	Apply(m, []rec{{"a", 2}, {"c", 1}}, func(r rec) string { return r.k }, []string{"b", "zz"})
	want := map[string]rec{"a": {"a", 2}, "c": {"c", 1}}
	if !maps.Equal(m, want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	// A key both upserted and removed in one delta ends up removed: the
	// sender never does that, but the rule is fixed.
	Apply(m, []rec{{"d", 1}}, func(r rec) string { return r.k }, []string{"d"})
	if _, ok := m["d"]; ok {
		t.Fatal("a key upserted and removed in one delta survived")
	}
}

func TestCloneIsShallowAndIndependent(t *testing.T) {
	m := map[string]*rec{"a": {"a", 1}}
	c := Clone(m)
	delete(c, "a")
	if len(m) != 1 {
		t.Fatal("deleting from the clone changed the original")
	}
	c2 := Clone[string, *rec](nil)
	if c2 == nil {
		t.Fatal("Clone(nil) is nil")
	}
}

func TestValuesAreInKeyOrder(t *testing.T) {
	got := Values(map[string]int{"b": 2, "c": 3, "a": 1})
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("%v, want [1 2 3]", got)
	}
	if n := len(Values[string, int](nil)); n != 0 {
		t.Fatalf("%d values of nil", n)
	}
}
