package report

import "slices"

// SQLFor returns the query and arguments of a report kind, so a test can
// run the very same SQL on another ClickHouse.
func SQLFor(kind, db string, q Query) (string, []any, error) {
	defaults := map[string][]string{"errors": {"vendor", "model"}, "latency": {"vendor", "model"},
		"models": {"vendor", "model"}, "tenants": {"tenant"}}
	p, err := newPlan(db, q, defaults[kind])
	if err != nil {
		return "", nil, err
	}
	switch kind {
	case "cost":
		return costSQL(p), p.args, nil
	case "fallbacks":
		return fallbackSQL(p), p.args, nil
	case "errors":
		return errorsSQL(p), p.args, nil
	case "latency":
		return latencySQL(p), p.args, nil
	case "models":
		return modelsSQL(p), p.args, nil
	case "tenants":
		return tenantsSQL(p), append(slices.Clone(p.args), p.args...), nil
	case "savings":
		return savingsSQL(p), p.args, nil
	}
	return "", nil, nil
}
