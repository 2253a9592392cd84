package executor

import (
	"fmt"

	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
)

// simulatorKey is sent when a vendor has no key variable: the simulator
// only checks that one is present, as the real APIs do.
const simulatorKey = "sim-key"

// AdapterFor builds the adapter of a policy vendor. The key is read from the
// environment variable the policy names (never from the policy itself), so
// pointing an executor at the real vendor is a base URL and a key, nothing
// else.
func AdapterFor(p *policy.Policy, name string, getenv func(string) string) (provider.Adapter, error) {
	v, ok := p.Vendors[name]
	if !ok {
		return nil, fmt.Errorf("vendor %q is not in the policy (known: %v)", name, p.VendorNames())
	}
	key := simulatorKey
	if v.APIKeyEnv != "" {
		key = getenv(v.APIKeyEnv)
		if key == "" {
			return nil, fmt.Errorf("vendor %q: environment variable %s is empty", name, v.APIKeyEnv)
		}
	}
	// The adapter pools its connections, sized by the vendor's concurrency.
	return adapters.New(v.Kind, adapters.Config{BaseURL: v.BaseURL, APIKey: key, MaxConcurrency: v.MaxConcurrency})
}
