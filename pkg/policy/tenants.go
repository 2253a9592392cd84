package policy

import "errors"

// Tenant is one customer of the gateway.
type Tenant struct {
	Tier string `yaml:"tier" json:"tier"`
}

func (p *Policy) validateTenants() error {
	var errs []error
	return errors.Join(errs...)
}
