// Package pricing turns normalised usage into USD from the policy catalog.
// It is the one place cost is computed: executors price attempts for the
// reply and the ledger prices them again for the tables with the same code.
package pricing

import (
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// Catalog finds a model's prices.
type Catalog interface {
	Model(vendor, model string) (*policy.Model, bool)
}

// Cost prices one attempt. Usage is normalised (envelope.Usage): input
// tokens include cached reads and cache writes, which are priced at their
// own rates when the catalog has one and at the input rate otherwise. known
// is false when the model is not in the catalog; the cost is then 0 and the
// caller must flag it rather than present it as free.
func Cost(c Catalog, vendor, model string, u envelope.Usage) (usd float64, known bool) {
	m, ok := c.Model(vendor, model)
	if !ok {
		return 0, false
	}
	return Price(m.Price, u), true
}

// Price applies one price list to usage.
func Price(p policy.Price, u envelope.Usage) float64 {
	cached := clamp(u.CachedTokens, u.InputTokens)
	written := clamp(u.CacheWriteTokens, u.InputTokens-cached)
	fresh := u.InputTokens - cached - written

	cachedRate := p.CachedPerMTok
	if cachedRate == 0 {
		cachedRate = p.InputPerMTok
	}
	writeRate := p.CacheWritePerMTok
	if writeRate == 0 {
		writeRate = p.InputPerMTok
	}
	micro := float64(fresh)*p.InputPerMTok +
		float64(cached)*cachedRate +
		float64(written)*writeRate +
		float64(u.OutputTokens)*p.OutputPerMTok
	return micro / 1e6
}

func clamp(v, hi int) int {
	if v < 0 {
		return 0
	}
	if v > hi {
		return hi
	}
	return v
}
