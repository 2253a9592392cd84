// Package cli implements the switchyard subcommands.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/services/ledger"
)

// SignalContext is cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out, errOut io.Writer) error
}

func commands() []command {
	return []command{
		{"up", "run the whole pipeline in one process (embedded NATS, simulator when no vendor keys)", runUp},
		{"demo", "run the pipeline with a sample workload and a vendor outage, then print the reports", runDemo},
		{"submit", "publish one request and print its reply", runSubmit},
		{"report", "cost | fallbacks | errors | latency | models | tenants | savings reports from ClickHouse", runReport},
		{"dlq", "ls | show | replay | purge dead letters", runDLQ},
		{"keys", "create | ls | revoke API keys of the HTTP edge", runKeys},
		{"tenants", "create | ls | revoke NATS credentials of tenants", runTenants},
		{"operators", "create NAME --out FILE: an operator's own NATS credentials", runOperators},
		{"creds", "rotate SERVICE: new NATS credentials for a service, the old ones revoked", runCreds},
		{"policy", "check | apply | show | history of the routing policy", runPolicy},
		{"provision", "create or update the streams, buckets and consumers of separate service processes, then exit", runProvision},
		{"ledger", "migrate: apply the ClickHouse migrations", runLedger},
		{"sim", "run the vendor simulator alone", runSim},
		{"bench", "drive the pipeline and the bare simulator, report throughput and latency", runBench},
	}
}

// Main runs one subcommand and returns the process exit code.
func Main(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(errOut)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], out, errOut)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				fmt.Fprintf(errOut, "switchyard %s: %v\n", c.name, err)
				return 2
			default:
				fmt.Fprintf(errOut, "switchyard %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(errOut, "switchyard: unknown command %q\n", args[0])
	usage(errOut)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: switchyard <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery command reads SWITCHYARD_* environment variables (see README); -h shows a command's flags.")
}

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

func newFlags(name string, errOut io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("switchyard "+name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// natsConfig points client commands at NATS. Without
// SWITCHYARD_NATS_CREDS the operator's credentials `up` wrote into its data
// directory are used when they exist, so the CLI beside `up` needs no flag.
type natsConfig struct {
	URL     string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	DataDir string `envconfig:"DATA_DIR" default:"data"`
	natsx.ClientAuth
}

func loadNATSConfig() (natsConfig, error) {
	var c natsConfig
	if err := envcfg.Process(os.LookupEnv, &c); err != nil {
		return c, err
	}
	if c.Creds == "" {
		if f := natsauth.CredsFile(c.DataDir, natsauth.OperatorUser); fileExists(f) {
			c.Creds = f
		}
	}
	return c, c.ClientAuth.Validate()
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func connectNATS(name string) (*nats.Conn, error) {
	c, err := loadNATSConfig()
	if err != nil {
		return nil, err
	}
	return dialNATS(c, name)
}

func dialNATS(c natsConfig, name string) (*nats.Conn, error) {
	opts, err := c.ClientAuth.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URL, append(opts, nats.Name("switchyard-"+name))...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (is `switchyard up` running? set SWITCHYARD_NATS_URL, and SWITCHYARD_NATS_CREDS or SWITCHYARD_DATA_DIR): %w", c.URL, err)
	}
	return nc, nil
}

// LoadLedgerConfig is how every client command (report, ledger migrate,
// ledger reprice) finds ClickHouse: the same SWITCHYARD_CLICKHOUSE_* names
// `up` and the ledger binary write with.
func LoadLedgerConfig(lookup envcfg.Lookup) (ledger.Config, error) {
	var cfg ledger.Config
	err := envcfg.Process(lookup, &cfg)
	return cfg, err
}

func ledgerConfig() (ledger.Config, error) { return LoadLedgerConfig(os.LookupEnv) }

func logger(errOut io.Writer, service, level string) zerolog.Logger {
	l, err := obs.NewLogger(errOut, service, level)
	if err != nil {
		l, _ = obs.NewLogger(errOut, service, "info")
	}
	return l
}
