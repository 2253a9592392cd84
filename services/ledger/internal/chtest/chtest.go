// Package chtest gives tests a private database on the real ClickHouse
// named by SWITCHYARD_TEST_CLICKHOUSE_ADDR (default 127.0.0.1:9000). When
// ClickHouse is unreachable a test fails if CI is set and is skipped
// otherwise.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/services/ledger"
)

// Addr is the test server's native address.
func Addr() string {
	if a := os.Getenv("SWITCHYARD_TEST_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:9000"
}

// Require fails or skips the test when ClickHouse cannot be reached.
func Require(tb testing.TB) {
	tb.Helper()
	c, err := net.DialTimeout("tcp", Addr(), 2*time.Second)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("ClickHouse at %s is unreachable (CI is set): %v", Addr(), err)
		}
		tb.Skipf("ClickHouse at %s is unreachable: %v", Addr(), err)
	}
	_ = c.Close()
}

// Config returns a ledger configuration for a fresh, uniquely named test
// database on the test server. The database is dropped when the test ends.
func Config(tb testing.TB) ledger.Config {
	tb.Helper()
	Require(tb)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	cfg := ledger.DefaultConfig()
	cfg.ClickHouseAddr = Addr()
	cfg.ClickHouseDatabase = "switchyard_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := cfg
		c.ClickHouseDatabase = "default"
		conn, err := ledger.Open(ctx, c)
		if err != nil {
			tb.Errorf("drop test database %s: %v", cfg.ClickHouseDatabase, err)
			return
		}
		defer conn.Close()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS `"+cfg.ClickHouseDatabase+"`"); err != nil {
			tb.Errorf("drop test database %s: %v", cfg.ClickHouseDatabase, err)
		}
	})
	return cfg
}

// Migrated opens the test database and applies the migrations.
func Migrated(tb testing.TB) (driver.Conn, ledger.Config) {
	tb.Helper()
	cfg := Config(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := ledger.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("open clickhouse: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	if _, err := ledger.Migrate(ctx, conn, cfg.ClickHouseDatabase, zerolog.Nop()); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return conn, cfg
}

// Count returns the number of rows a query's single UInt64 column holds.
func Count(tb testing.TB, conn driver.Conn, query string) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}
