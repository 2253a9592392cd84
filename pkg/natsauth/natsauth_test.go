package natsauth

import (
	"bytes"
	"os"
	"testing"

	"github.com/nats-io/jwt/v2"
)

// TestServiceCredsKeptAcrossRestarts: `up` restarting with the same
// vendors keeps every credentials file (a copy on another machine stays
// valid); a change of permissions replaces the file and revokes its old
// user in the SWITCHYARD account.
func TestServiceCredsKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	read := func(user string) []byte {
		b, err := os.ReadFile(CredsFile(dir, user))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := a.WriteServiceCreds([]string{"openai"}); err != nil {
		t.Fatal(err)
	}
	first := map[string][]byte{}
	for _, u := range []string{OperatorUser, "sys", "router", "executor-openai"} {
		first[u] = read(u)
	}
	again, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.WriteServiceCreds([]string{"openai"}); err != nil {
		t.Fatal(err)
	}
	for u, b := range first {
		if !bytes.Equal(read(u), b) {
			t.Errorf("%s: rewritten on a restart with the same permissions", u)
		}
	}
	oldRouter, err := readUserClaims(CredsFile(dir, "router"))
	if err != nil {
		t.Fatal(err)
	}
	if err := again.WriteServiceCreds([]string{"openai", "gemini"}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(read("router"), first["router"]) {
		t.Fatal("router's permissions changed (a new vendor's limiter windows) but its file was kept")
	}
	token, err := again.switchyardJWT()
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ac.Revocations[oldRouter.Subject]; !ok {
		t.Fatalf("the replaced router user %s is not revoked: %v", oldRouter.Subject, ac.Revocations)
	}
}
