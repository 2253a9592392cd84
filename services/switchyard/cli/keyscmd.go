package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
)

// runKeys manages the HTTP edge's API keys. `create` prints the new key
// and only the key on stdout (so `KEY=$(switchyard keys create …)` works);
// the key is shown once and stored only as its hash.
func runKeys(ctx context.Context, args []string, out, errOut io.Writer) error {
	var tenant, routes *string
	var rpm, maxInFlight *int
	sub, pos, err := parseSubcommand("keys", "keys create -tenant T [-routes a,b] [-rpm N] [-max-in-flight N] | ls | revoke KEY_OR_ID", args, errOut, func(fs *flag.FlagSet) {
		tenant = fs.String("tenant", "", "create: the tenant the key speaks for")
		routes = fs.String("routes", "", "create: comma-separated routes the key may use (default: every route, auto and catalog models)")
		rpm = fs.Int("rpm", 0, "create: requests per minute the key may send, across every edge replica (0: no limit)")
		maxInFlight = fs.Int("max-in-flight", 0, "create: requests the key may have in flight, across every edge replica (0: no limit)")
	})
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if *tenant == "" || len(pos) != 0 {
			return usageErr("keys create -tenant T [-routes a,b] [-rpm N] [-max-in-flight N]")
		}
		if *rpm < 0 || *maxInFlight < 0 {
			return usageErr("keys create: -rpm and -max-in-flight must be 0 (no limit) or positive")
		}
	case "ls":
		if len(pos) != 0 {
			return usageErr("keys ls takes no argument")
		}
	case "revoke":
		if len(pos) != 1 {
			return usageErr("keys revoke KEY_OR_ID")
		}
	default:
		return usageErr("unknown keys command %q (create, ls, revoke)", sub)
	}
	nc, err := connectNATS("keys")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := apikey.Open(ctx, js)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		var allow []string
		for _, r := range strings.Split(*routes, ",") {
			if r = strings.TrimSpace(r); r != "" {
				allow = append(allow, r)
			}
		}
		key, rec, err := store.CreateWithLimits(ctx, *tenant, allow, apikey.Limits{RPM: *rpm, MaxInFlight: *maxInFlight})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, key)
		fmt.Fprintf(errOut, "created key %s for tenant %s (shown once; only its hash is stored)\n", rec.ID, rec.Tenant)
	case "ls":
		list, err := store.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTENANT\tROUTES\tRPM\tMAX_IN_FLIGHT\tCREATED\tREVOKED")
		limit := func(n int) string {
			if n == 0 {
				return "-"
			}
			return fmt.Sprint(n)
		}
		for _, r := range list {
			routes, revoked := "*", "-"
			if len(r.Routes) > 0 {
				routes = strings.Join(r.Routes, ",")
			}
			if r.Revoked() {
				revoked = r.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Tenant, routes, limit(r.RPM), limit(r.MaxInFlight), r.CreatedAt.Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	case "revoke":
		rec, err := store.Revoke(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "revoked key %s of tenant %s\n", rec.ID, rec.Tenant)
	}
	return nil
}
