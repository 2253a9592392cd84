// Budgets of one request: a cost estimate is reserved before any vendor is
// called and settled with the real cost when the request finishes, so
// concurrent requests and router replicas cannot overshoot a budget.

package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
)

// DefaultOutputTokens is assumed when a request sets no max_tokens.
const DefaultOutputTokens = 512

// EstimateUSD is the most a request may cost on its route: the prompt and
// the output budget priced at the chain's most expensive model, or at the
// model the request pins (which is then its whole chain).
func EstimateUSD(p *policy.Policy, route *policy.Route, w *envelope.Work) float64 {
	out := w.Request.MaxTokens
	if out <= 0 {
		out = DefaultOutputTokens
	}
	in := max(w.Class.TokenEstimate-w.Request.MaxTokens, 0)
	if t, ok := w.Request.PinnedTarget(); ok {
		if m, ok := p.Model(t.Vendor, t.Model); ok {
			return pricing.Price(m.Price, envelope.Usage{InputTokens: in, OutputTokens: out})
		}
	}
	best := 0.0
	for _, t := range route.Chain {
		m, ok := p.Model(t.Vendor, t.Model)
		if !ok {
			continue
		}
		best = max(best, pricing.Price(m.Price, envelope.Usage{InputTokens: in, OutputTokens: out}))
	}
	return best
}

// Refusal is a budget or quota refusal with its reply code.
type Refusal struct {
	Code string
	Err  error
}

func (r *Refusal) Error() string { return r.Err.Error() }

// ReserveRequest holds the estimate against the tenant's budgets and records the
// reservation in the work envelope. A tenant without limits reserves
// nothing (and costs no KV write). Over the limit it returns *Refusal.
func ReserveRequest(ctx context.Context, b *Budgets, p *policy.Policy, route *policy.Route, w *envelope.Work) error {
	tenant, _ := p.Tenant(w.Request.Tenant)
	if b == nil || tenant.Budget.Unlimited() {
		return nil
	}
	res, err := b.Reserve(ctx, w.Request.Tenant, tenant.Budget, EstimateUSD(p, route, w), w.Key)
	switch {
	case errors.Is(err, ErrQuotaExceeded):
		return &Refusal{Code: envelope.CodeQuotaExceeded, Err: err}
	case errors.Is(err, ErrBudgetExceeded):
		return &Refusal{Code: envelope.CodeBudgetExceeded, Err: err}
	case err != nil:
		return fmt.Errorf("reserve budget: %w", err)
	}
	w.Budget, err = json.Marshal(res)
	return err
}

// SettleRequest finishes the request's reservation: with costUSD when a vendor
// was called (or the answer came from the cache), released when none was.
// It is idempotent per reservation, and a request without one is a no-op.
func SettleRequest(ctx context.Context, b *Budgets, w *envelope.Work, costUSD float64, charged bool) error {
	if b == nil || len(w.Budget) == 0 {
		return nil
	}
	var res Reservation
	if err := json.Unmarshal(w.Budget, &res); err != nil {
		return fmt.Errorf("budget reservation: %w", err)
	}
	if !charged {
		return b.Release(ctx, res)
	}
	return b.Settle(ctx, res, costUSD)
}

// HeldUSD is the amount the request's reservation holds (0 without one).
func HeldUSD(w *envelope.Work) (float64, bool) {
	if len(w.Budget) == 0 {
		return 0, false
	}
	var res Reservation
	if json.Unmarshal(w.Budget, &res) != nil {
		return 0, false
	}
	return res.EstimateUSD, true
}
