package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// runTenants issues and revokes tenants' NATS credentials with the keys
// `up` keeps in its data directory (SWITCHYARD_DATA_DIR, default data).
// Issuing is signing: the running server accepts the new user at once.
func runTenants(ctx context.Context, args []string, out, errOut io.Writer) error {
	const use = "tenants create TENANT [--out FILE] | ls | revoke TENANT_OR_USER_KEY"
	var outFile *string
	sub, pos, err := parseSubcommand("tenants", use, args, errOut, func(fs *flag.FlagSet) {
		outFile = fs.String("out", "", "create: write the credentials file here, mode 0600 (default: stdout)")
	})
	if err != nil {
		return err
	}
	switch {
	case sub == "create" && len(pos) == 1, sub == "revoke" && len(pos) == 1, sub == "ls" && len(pos) == 0:
	case sub == "create" || sub == "revoke" || sub == "ls":
		return usageErr(use)
	default:
		return usageErr("unknown tenants command %q (create, ls, revoke)", sub)
	}
	cfg, auth, err := loadAuth()
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		creds, t, err := auth.CreateTenant(pos[0], time.Now())
		if err != nil {
			return err
		}
		note := ""
		if err := pushTenant(cfg, auth, t.Tenant); err != nil {
			note = fmt.Sprintf("NATS is not reachable (%v): the credentials work once `up` starts", err)
		}
		if *outFile == "" {
			if note != "" {
				fmt.Fprintln(errOut, note)
			}
			_, err = out.Write(creds)
			return err
		}
		if err := os.WriteFile(*outFile, creds, 0o600); err != nil {
			return err
		}
		if err := os.Chmod(*outFile, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s for tenant %s (user %s)\n", *outFile, t.Tenant, t.UserKey)
		fmt.Fprintf(out, "read its replies:  nats --creds %s sub 'llm.replies.%s.>'\n", *outFile, t.Tenant)
		fmt.Fprintf(out, "publish a request: nats --creds %s pub llm.requests '{\"id\":\"r1\",\"tenant\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n", *outFile, t.Tenant)
		if note != "" {
			fmt.Fprintln(out, note)
		}
		return nil
	case "ls":
		list, err := auth.Tenants()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tUSER KEY\tCREATED\tREVOKED")
		for _, t := range list {
			revoked := "-"
			if t.RevokedAt != nil {
				revoked = t.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Tenant, t.UserKey, t.CreatedAt.Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	default: // revoke
		tenant, n, err := auth.RevokeTenant(pos[0], time.Now())
		if err != nil {
			return err
		}
		if err := pushTenant(cfg, auth, tenant); err != nil {
			fmt.Fprintf(out, "revoked %d credentials of %s; NATS is not reachable (%v): the revocation takes effect when `up` starts\n", n, tenant, err)
			return nil
		}
		fmt.Fprintf(out, "revoked %d credentials of %s; the server refuses them now\n", n, tenant)
		return nil
	}
}

// pushTenant sends a tenant's account to the running server as the system
// user `up` wrote.
func pushTenant(cfg natsConfig, auth *natsauth.Authority, tenant string) error {
	sys := cfg
	sys.Creds = natsauth.CredsFile(cfg.DataDir, "sys")
	nc, err := dialNATS(sys, "tenants")
	if err != nil {
		return err
	}
	defer nc.Close()
	return auth.PushTenant(nc, tenant)
}
