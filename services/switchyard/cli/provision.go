package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// runProvision creates (or updates, after an upgrade) the streams, buckets
// and consumers of a deployment of separate service processes, with the
// operator's credentials, prints them and exits: the services' own users
// may create none of it (docs/operations.md).
func runProvision(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("provision", errOut)
	vendors := fs.String("vendors", "", "comma-separated vendors whose executor consumers to create (default: every vendor of the policy in force)")
	fs.Usage = func() {
		fmt.Fprintln(errOut, "usage: switchyard provision [-vendors a,b]")
		fmt.Fprintln(errOut, "Creates or updates the streams, KV buckets and durable consumers every service needs, on SWITCHYARD_NATS_URL")
		fmt.Fprintln(errOut, "with SWITCHYARD_NATS_CREDS (the operator's; default <SWITCHYARD_DATA_DIR>/creds/operator.creds when it exists),")
		fmt.Fprintln(errOut, "SWITCHYARD_NATS_REPLICAS and SWITCHYARD_POLICY; consumes nothing. Run it again after an upgrade.")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadAppConfig()
	if err != nil {
		return err
	}
	// Like every client command: beside `up`, its operator's credentials.
	if f := natsauth.CredsFile(cfg.DataDir, natsauth.OperatorUser); cfg.Creds == "" && fileExists(f) {
		cfg.Creds = f
	}
	inv, err := app.Provision(ctx, cfg, natsx.SplitURLs(*vendors), logger(errOut, "", cfg.LogLevel))
	if err != nil {
		return err
	}
	printInventory(out, inv)
	return nil
}

func printInventory(out io.Writer, inv *app.Inventory) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STREAM\tREPLICAS\tMESSAGES")
	for _, s := range inv.Streams {
		fmt.Fprintf(w, "%s\tR%d\t%d\n", s.Name, s.Replicas, s.Messages)
	}
	fmt.Fprintln(w, "\nBUCKET\tREPLICAS\tMESSAGES")
	for _, b := range inv.Buckets {
		fmt.Fprintf(w, "%s\tR%d\t%d\n", b.Name, b.Replicas, b.Messages)
	}
	fmt.Fprintln(w, "\nCONSUMER\tREPLICAS\tPENDING\tACK PENDING")
	for _, c := range inv.Consumers {
		fmt.Fprintf(w, "%s\tR%d\t%d\t%d\n", c.Stream+"/"+c.Name, c.Replicas, c.Pending, c.AckPending)
	}
	_ = w.Flush()
	fmt.Fprintf(out, "provisioned: %d streams, %d buckets, %d consumers\n", len(inv.Streams), len(inv.Buckets), len(inv.Consumers))
}
