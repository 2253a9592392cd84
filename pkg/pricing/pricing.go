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

// Source says where an attempt's cost came from; the ledger stores it in
// attempts.cost_source.
type Source string

// Cost sources.
const (
	// SourceVendor: the vendor reported what it charged (OpenRouter's
	// usage.cost); that figure is the cost.
	SourceVendor Source = "vendor"
	// SourceCatalog: the policy catalog's prices applied to the vendor's
	// token counts.
	SourceCatalog Source = "catalog"
	// SourceNone: no cost is known: the model is not in the catalog (and
	// the vendor reported none), or the call never reported usage (an
	// attempt still "started").
	SourceNone Source = "none"
)

// Quote prices one attempt: the vendor-reported cost when there is one,
// the catalog price otherwise. Usage is normalised (envelope.Usage): input
// tokens include cached reads and cache writes, which are priced at their
// own rates when the catalog has one and at the input rate otherwise;
// output tokens include reasoning tokens, priced as output as every vendor
// bills them. With SourceNone the cost is 0 and the caller must flag it
// rather than present it as free.
func Quote(c Catalog, vendor, model string, u envelope.Usage) (usd float64, src Source) {
	if u.VendorCostReported {
		return u.VendorCostUSD, SourceVendor
	}
	m, ok := c.Model(vendor, model)
	if !ok {
		return 0, SourceNone
	}
	return Price(m.Price, u), SourceCatalog
}

// Cost is Quote for callers that only need to know whether the cost is
// known (known is false with SourceNone).
func Cost(c Catalog, vendor, model string, u envelope.Usage) (usd float64, known bool) {
	usd, src := Quote(c, vendor, model, u)
	return usd, src != SourceNone
}

// Price applies one price list to usage. Reasoning tokens are a subset of
// the output tokens; a usage whose reasoning count exceeds its output is
// billed at the larger figure rather than losing the difference.
func Price(p policy.Price, u envelope.Usage) float64 {
	cached := clamp(u.CachedTokens, u.InputTokens)
	written := clamp(u.CacheWriteTokens, u.InputTokens-cached)
	fresh := u.InputTokens - cached - written
	output := max(u.OutputTokens, u.ReasoningTokens, 0)

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
		float64(output)*p.OutputPerMTok
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
