package policy

import "errors"

// Alerts holds the thresholds of the operational alerts.
type Alerts struct{}

func (a Alerts) validate() error {
	var errs []error
	return errors.Join(errs...)
}
