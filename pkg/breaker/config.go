package breaker

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"
)

// Defaults applied by Config.WithDefaults to zero fields.
const (
	DefaultBucket           = "switchyard_breakers"
	DefaultFailureThreshold = 5
	DefaultOpenFor          = 30 * time.Second
	DefaultHalfOpenProbes   = 1
	DefaultSuccessesToClose = 1
	DefaultProbeTimeout     = 30 * time.Second
	DefaultRateWindow       = time.Minute
	DefaultRateMinRequests  = 20
)

var bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Config tunes every breaker of one Breakers set. Zero fields take the
// defaults above (see WithDefaults). Embed it in a service config with an
// envconfig prefix, e.g. `envconfig:"BREAKER"`.
type Config struct {
	// Bucket is the JetStream KeyValue bucket holding the shared state.
	Bucket string `envconfig:"BUCKET"`
	// The bucket's replicas are the process's (SWITCHYARD_NATS_REPLICAS,
	// applied by the JetStream handle New is given: natsx.WithReplicas).

	// FailureThreshold opens a closed breaker after this many consecutive
	// retryable failures, counted across all replicas. A negative value
	// disables the consecutive-failure rule (FailureRate must then be set).
	FailureThreshold int `envconfig:"FAILURE_THRESHOLD"`

	// FailureRate, when in (0, 1], also opens a closed breaker once the
	// share of failed calls over RateWindow reaches it, provided at least
	// RateMinRequests calls were recorded in the window. The window is kept
	// per replica (healthy calls are never written to the KV bucket), so
	// any replica that sees the rate trips the shared breaker.
	FailureRate     float64       `envconfig:"FAILURE_RATE"`
	RateWindow      time.Duration `envconfig:"RATE_WINDOW"`
	RateMinRequests int           `envconfig:"RATE_MIN_REQUESTS"`

	// OpenFor is how long an open breaker rejects calls before it lets
	// trial calls through (half-open).
	OpenFor time.Duration `envconfig:"OPEN_FOR"`
	// HalfOpenProbes is the maximum number of outstanding trial calls in
	// half-open, across all replicas.
	HalfOpenProbes int `envconfig:"HALF_OPEN_PROBES"`
	// SuccessesToClose is how many successful trial calls close the breaker.
	SuccessesToClose int `envconfig:"SUCCESSES_TO_CLOSE"`
	// ProbeTimeout frees a half-open slot whose permit was never recorded
	// or released (a crashed replica, a lost call), so a breaker cannot
	// stay wedged in half-open.
	ProbeTimeout time.Duration `envconfig:"PROBE_TIMEOUT"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = DefaultFailureThreshold
	}
	if c.FailureRate > 0 {
		if c.RateWindow == 0 {
			c.RateWindow = DefaultRateWindow
		}
		if c.RateMinRequests == 0 {
			c.RateMinRequests = DefaultRateMinRequests
		}
	}
	if c.OpenFor == 0 {
		c.OpenFor = DefaultOpenFor
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = DefaultHalfOpenProbes
	}
	if c.SuccessesToClose == 0 {
		c.SuccessesToClose = DefaultSuccessesToClose
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	return c
}

// Validate reports every problem at once. Zero fields are valid: they mean
// "use the default".
func (c Config) Validate() error {
	var errs []error
	if c.Bucket != "" && !bucketRe.MatchString(c.Bucket) {
		errs = append(errs, fmt.Errorf("breaker bucket %q: only letters, digits, '-' and '_' are allowed", c.Bucket))
	}
	if math.IsNaN(c.FailureRate) || c.FailureRate < 0 || c.FailureRate > 1 {
		errs = append(errs, errors.New("breaker failure rate: must be between 0 (disabled) and 1"))
	}
	if c.FailureThreshold < 0 && !(c.FailureRate > 0) {
		errs = append(errs, errors.New("breaker: the failure threshold is disabled and no failure rate is set, so nothing would open the breaker"))
	}
	if c.RateWindow < 0 || (c.RateWindow > 0 && c.RateWindow < time.Second) {
		errs = append(errs, errors.New("breaker rate window: must be at least 1s"))
	}
	if c.RateMinRequests < 0 {
		errs = append(errs, errors.New("breaker rate min requests: must not be negative"))
	}
	if c.OpenFor < 0 {
		errs = append(errs, errors.New("breaker open for: must not be negative"))
	}
	if c.HalfOpenProbes < 0 {
		errs = append(errs, errors.New("breaker half-open probes: must not be negative"))
	}
	if c.SuccessesToClose < 0 {
		errs = append(errs, errors.New("breaker successes to close: must not be negative"))
	}
	if c.ProbeTimeout < 0 {
		errs = append(errs, errors.New("breaker probe timeout: must not be negative"))
	}
	return errors.Join(errs...)
}
