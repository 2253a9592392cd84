package apikey

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A created key resolves to its tenant; the bucket holds only its hash;
// revoking by key or by id makes the next lookup fail; bad input is refused.
func TestCreateLookupRevoke(t *testing.T) {
	ctx := context.Background()
	_, js := testkit.JetStream(t)
	s, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	k1, rec1, err := s.Create(ctx, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, rec2, err := s.Create(ctx, "beta", []string{"chat"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k1, Prefix) || len(k1) < 40 || k1 == k2 {
		t.Fatalf("keys %q %q", k1, k2)
	}
	for _, tc := range []struct {
		key, tenant string
	}{{k1, "acme"}, {k2, "beta"}} {
		got, err := s.Lookup(ctx, tc.key)
		if err != nil || got.Tenant != tc.tenant {
			t.Fatalf("lookup: %+v %v, want tenant %s", got, err, tc.tenant)
		}
	}
	if got, _ := s.Lookup(ctx, k2); got.AllowsRoute("extract") || !got.AllowsRoute("chat") {
		t.Fatalf("allow-list of %+v", got)
	}
	// Nothing in the bucket is the key itself.
	kv, _ := js.KeyValue(ctx, Bucket)
	lister, _ := kv.ListKeys(ctx)
	for h := range lister.Keys() {
		e, _ := kv.Get(ctx, h)
		if strings.Contains(h+string(e.Value()), k1[len(Prefix):]) || strings.Contains(h+string(e.Value()), k2[len(Prefix):]) {
			t.Fatalf("bucket entry %s holds a key: %s", h, e.Value())
		}
	}
	for _, bad := range []string{"", "sy-", "sk-" + k1[3:], k1 + "x", strings.Repeat("sy-a", 100)} {
		if _, err := s.Lookup(ctx, bad); !errors.Is(err, ErrUnknown) {
			t.Errorf("lookup %q: %v, want ErrUnknown", bad, err)
		}
	}
	if _, _, err := s.Create(ctx, "no.dots", nil); err == nil {
		t.Error("a tenant that is not a subject token was accepted")
	}
	if _, err := s.Revoke(ctx, rec1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, k2); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{k1, k2} {
		if _, err := s.Lookup(ctx, k); !errors.Is(err, ErrUnknown) {
			t.Errorf("revoked key still resolves: %v", err)
		}
	}
	if _, err := s.Revoke(ctx, "0123456789abcdef"); !errors.Is(err, ErrUnknown) {
		t.Errorf("revoke of an unknown id: %v", err)
	}
	if _, err := s.Revoke(ctx, "nope"); err == nil {
		t.Error("revoke of garbage succeeded")
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != rec1.ID || list[1].ID != rec2.ID || !list[0].Revoked() || !list[1].Revoked() {
		t.Fatalf("list: %+v %v", list, err)
	}
}

// Limits travel with the key record; negative limits are refused.
func TestCreateWithLimits(t *testing.T) {
	ctx := context.Background()
	_, js := testkit.JetStream(t)
	s, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := s.CreateWithLimits(ctx, "acme", nil, Limits{RPM: 60, MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Lookup(ctx, k); err != nil || got.RPM != 60 || got.MaxInFlight != 4 {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	for _, bad := range []Limits{{RPM: -1}, {MaxInFlight: -1}} {
		if _, _, err := s.CreateWithLimits(ctx, "acme", nil, bad); err == nil {
			t.Errorf("limits %+v accepted", bad)
		}
	}
}
