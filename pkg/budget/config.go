package budget

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Defaults applied by Config.WithDefaults to zero fields.
const (
	DefaultBucket         = "switchyard_budgets"
	DefaultReservationTTL = 10 * time.Minute
	DefaultLateSettle     = 24 * time.Hour
	// minMaxAge keeps a month window readable until its month is over.
	minMaxAge = 32 * 24 * time.Hour
)

var bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Config tunes a Budgets set. Zero fields take the defaults above. Embed it
// in a service config with an envconfig prefix, e.g. `envconfig:"BUDGET"`.
type Config struct {
	// Bucket is the JetStream KeyValue bucket holding the windows.
	Bucket string `envconfig:"BUCKET"`
	// The bucket's replicas are the process's (SWITCHYARD_NATS_REPLICAS,
	// applied by the JetStream handle New is given: natsx.WithReplicas).
	// ReservationTTL is how long a reservation holds budget without being
	// settled or released. An expired one (a crashed router, a lost
	// reply) stops counting as reserved at the next write to its window;
	// its request stays counted.
	ReservationTTL time.Duration `envconfig:"RESERVATION_TTL"`
	// LateSettle is how long after expiry a reservation can still be
	// settled: its actual cost is then added once. Later settles are
	// ignored like any unknown reservation.
	LateSettle time.Duration `envconfig:"LATE_SETTLE"`
	// MaxAge, when set, is the bucket's MaxAge when New creates it: windows
	// not written for that long are removed. 0 keeps them forever. It must
	// be at least 32 days so a month window outlives its month.
	MaxAge time.Duration `envconfig:"MAX_AGE"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.ReservationTTL == 0 {
		c.ReservationTTL = DefaultReservationTTL
	}
	if c.LateSettle == 0 {
		c.LateSettle = DefaultLateSettle
	}
	return c
}

// Validate reports every problem at once. Zero fields are valid: they mean
// "use the default".
func (c Config) Validate() error {
	var errs []error
	if c.Bucket != "" && !bucketRe.MatchString(c.Bucket) {
		errs = append(errs, fmt.Errorf("budget bucket %q: only letters, digits, '-' and '_' are allowed", c.Bucket))
	}
	if c.ReservationTTL < 0 {
		errs = append(errs, errors.New("budget reservation ttl: must not be negative"))
	}
	if c.LateSettle < 0 {
		errs = append(errs, errors.New("budget late settle: must not be negative"))
	}
	if c.MaxAge < 0 || (c.MaxAge > 0 && c.MaxAge < minMaxAge) {
		errs = append(errs, fmt.Errorf("budget max age: must be 0 (forever) or at least %s", minMaxAge))
	}
	return errors.Join(errs...)
}
