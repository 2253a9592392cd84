package edge

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A key revoked through the bucket stops working on every edge replica
// without a restart, within the key view's watch latency: each replica is
// polled from the moment the revocation is stored until it answers 401.
// The latencies are logged (go test -v -run TestRevocationReachesEveryReplica).
func TestRevocationReachesEveryReplica(t *testing.T) {
	ctx := context.Background()
	url := testkit.Server(t)
	keys := openKeys(t, url)
	replicas := []string{startEdge(t, url), startEdge(t, url)}
	status := func(base, key string) int {
		req, _ := http.NewRequest("GET", base+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	var lat []time.Duration
	for range 10 {
		key, _, err := keys.Create(ctx, "acme", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, base := range replicas {
			if s := status(base, key); s != 200 {
				t.Fatalf("%s: live key: %d", base, s)
			}
		}
		if _, err := keys.Revoke(ctx, key); err != nil {
			t.Fatal(err)
		}
		revoked := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, base := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for status(base, key) != 401 {
					if time.Since(revoked) > 5*time.Second {
						t.Errorf("%s still serves a key revoked 5s ago", base)
						return
					}
				}
				mu.Lock()
				lat = append(lat, time.Since(revoked))
				mu.Unlock()
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	slices.Sort(lat)
	t.Logf("revocation to 401 on every replica, %d samples: median %v, max %v", len(lat), lat[len(lat)/2], lat[len(lat)-1])
}
