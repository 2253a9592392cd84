// Package ledger is Switchyard's cost ledger: it consumes the attempt and
// request telemetry events from the LLM_TELEMETRY stream, re-prices every
// attempt from the policy catalog and stores both in ClickHouse, acknowledging
// a message only after ClickHouse has accepted the batch that holds it.
//
// Rows may be inserted more than once (redelivery, retried inserts, ledger
// restarts); the tables are ReplacingMergeTree keyed by the event's ids and
// partitioned by the event's own timestamp, so reads with FINAL see each
// attempt and request exactly once. See docs/ledger.md.
package ledger

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Config is the ledger's configuration. Load it with
// envconfig.Process("SWITCHYARD", &cfg).
type Config struct {
	// ClickHouseAddr is the native-protocol address (host:port), or a
	// comma-separated list of them: connections go to the first that
	// answers, and move on when it stops answering.
	ClickHouseAddr string `envconfig:"CLICKHOUSE_ADDR" default:"127.0.0.1:9000"`
	// ClickHouseCluster, when set, is the cluster (a remote_servers name of
	// the servers' configuration) the migrations create their tables on:
	// Replicated…MergeTree tables behind Distributed ones, ON CLUSTER.
	// Empty: a single server. See docs/ledger.md.
	ClickHouseCluster string `envconfig:"CLICKHOUSE_CLUSTER"`
	// ClickHouseDatabase holds the ledger's tables; created if missing.
	ClickHouseDatabase string `envconfig:"CLICKHOUSE_DATABASE" default:"switchyard"`
	ClickHouseUser     string `envconfig:"CLICKHOUSE_USER" default:"default"`
	ClickHousePassword string `envconfig:"CLICKHOUSE_PASSWORD"`
	// ClickHouseDialTimeout bounds one connection attempt.
	ClickHouseDialTimeout time.Duration `envconfig:"CLICKHOUSE_DIAL_TIMEOUT" default:"5s"`

	// BatchSize is the most messages fetched and inserted at once.
	BatchSize int `envconfig:"LEDGER_BATCH_SIZE" default:"1000"`
	// FlushInterval is the longest a fetched-but-partial batch waits: the
	// Fetch max wait.
	FlushInterval time.Duration `envconfig:"LEDGER_FLUSH_INTERVAL" default:"250ms"`
	// Consumer is the durable pull consumer's name on LLM_TELEMETRY.
	Consumer string `envconfig:"LEDGER_CONSUMER" default:"ledger"`
	// InsertTimeout bounds one batch insert into ClickHouse.
	InsertTimeout time.Duration `envconfig:"LEDGER_INSERT_TIMEOUT" default:"30s"`
	// RetryMin and RetryMax bound the exponential backoff between failed
	// inserts of the same batch. RetryMax must stay below the consumer's
	// AckWait (60s): the batch's messages are marked in progress before
	// every wait.
	RetryMin time.Duration `envconfig:"LEDGER_RETRY_MIN" default:"100ms"`
	RetryMax time.Duration `envconfig:"LEDGER_RETRY_MAX" default:"10s"`
}

// AckWait is the consumer's ack wait. Batches being retried are marked in
// progress well within it.
const AckWait = 60 * time.Second

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidDatabaseName reports whether name is a plain ClickHouse identifier,
// the only database names the ledger accepts (they are written into DDL).
func ValidDatabaseName(name string) bool { return len(name) <= 128 && identRE.MatchString(name) }

// ValidClusterName reports whether name is a cluster name the ledger
// accepts: a plain identifier, as it is written into DDL.
func ValidClusterName(name string) bool { return len(name) <= 128 && identRE.MatchString(name) }

// ClickHouseAddrs is ClickHouseAddr split on commas, blanks trimmed.
func (c Config) ClickHouseAddrs() []string {
	var out []string
	for _, a := range strings.Split(c.ClickHouseAddr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.ClickHouseAddrs()) == 0 {
		bad("CLICKHOUSE_ADDR: must not be empty")
	}
	for _, a := range c.ClickHouseAddrs() {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			bad("CLICKHOUSE_ADDR: %q is not host:port", a)
		}
	}
	if c.ClickHouseCluster != "" && !ValidClusterName(c.ClickHouseCluster) {
		bad("CLICKHOUSE_CLUSTER: %q is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)", c.ClickHouseCluster)
	}
	if !ValidDatabaseName(c.ClickHouseDatabase) {
		bad("CLICKHOUSE_DATABASE: %q is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)", c.ClickHouseDatabase)
	}
	if c.ClickHouseUser == "" {
		bad("CLICKHOUSE_USER: must not be empty")
	}
	if c.ClickHouseDialTimeout <= 0 {
		bad("CLICKHOUSE_DIAL_TIMEOUT: must be positive, got %s", c.ClickHouseDialTimeout)
	}
	if c.BatchSize < 1 || c.BatchSize > 100_000 {
		bad("LEDGER_BATCH_SIZE: must be between 1 and 100000, got %d", c.BatchSize)
	}
	if c.FlushInterval < time.Millisecond || c.FlushInterval > 30*time.Second {
		bad("LEDGER_FLUSH_INTERVAL: must be between 1ms and 30s, got %s", c.FlushInterval)
	}
	if !identRE.MatchString(c.Consumer) {
		bad("LEDGER_CONSUMER: %q is not a valid durable name", c.Consumer)
	}
	if c.InsertTimeout <= 0 {
		bad("LEDGER_INSERT_TIMEOUT: must be positive, got %s", c.InsertTimeout)
	}
	if c.RetryMin <= 0 {
		bad("LEDGER_RETRY_MIN: must be positive, got %s", c.RetryMin)
	}
	if c.RetryMax < c.RetryMin {
		bad("LEDGER_RETRY_MAX: %s is below LEDGER_RETRY_MIN %s", c.RetryMax, c.RetryMin)
	}
	if c.RetryMax >= AckWait {
		bad("LEDGER_RETRY_MAX: %s must be below the ack wait %s", c.RetryMax, AckWait)
	}
	return errors.Join(errs...)
}

// DefaultConfig is the configuration with every default applied.
func DefaultConfig() Config {
	return Config{
		ClickHouseAddr:        "127.0.0.1:9000",
		ClickHouseDatabase:    "switchyard",
		ClickHouseUser:        "default",
		ClickHouseDialTimeout: 5 * time.Second,
		BatchSize:             1000,
		FlushInterval:         250 * time.Millisecond,
		Consumer:              "ledger",
		InsertTimeout:         30 * time.Second,
		RetryMin:              100 * time.Millisecond,
		RetryMax:              10 * time.Second,
	}
}
