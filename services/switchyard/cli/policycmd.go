package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

func runPolicy(ctx context.Context, args []string, out, errOut io.Writer) error {
	var by, comment *string
	var flags *flag.FlagSet // appliedBy asks whether -by was given
	sub, files, err := parseSubcommand("policy", "policy check FILE | apply FILE [-by NAME] [-m COMMENT] | show | history", args, errOut, func(fs *flag.FlagSet) {
		flags = fs
		by = fs.String("by", defaultActor(), "apply: who applies it (recorded in the history); with NATS credentials their user name is recorded and -by is refused")
		comment = fs.String("m", "", "apply: what changed and why")
	})
	if err != nil {
		return err
	}
	if sub == "check" {
		if len(files) != 1 {
			return usageErr("policy check FILE")
		}
		p, err := policy.Load(files[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: valid (version %q, %d vendors, %d models, %d routes)\n", files[0], p.Version, len(p.Vendors), len(p.Models), len(p.Routes))
		return nil
	}
	switch sub {
	case "apply":
		if len(files) != 1 {
			return usageErr("policy apply FILE [-by NAME] [-m COMMENT]")
		}
	case "show", "history":
		if len(files) != 0 {
			return usageErr("policy %s takes no argument", sub)
		}
	default:
		return usageErr("unknown policy command %q (check, apply, show, history)", sub)
	}
	ncfg, err := loadNATSConfig()
	if err != nil {
		return err
	}
	if sub == "apply" {
		if *by, err = appliedBy(ncfg, flags, *by); err != nil {
			return err
		}
	}
	nc, err := dialNATS(ncfg, "policy")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := policy.OpenStore(ctx, js, "", logger(errOut, "policy", "warn"))
	if err != nil {
		return err
	}
	switch sub {
	case "apply":
		src, err := os.ReadFile(files[0])
		if err != nil {
			return err
		}
		a, err := store.Apply(ctx, src, *by, *comment)
		if err != nil {
			return fmt.Errorf("refused, the running policy stays:\n%w", err)
		}
		fmt.Fprintf(out, "applied revision %d (version %q) by %s; every stage picks it up without a restart\n", a.Revision, a.Policy.Version, a.AppliedBy)
		return nil
	case "show":
		a, ok, err := store.Load(ctx)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintln(out, "no policy applied yet: the stages run the file given by SWITCHYARD_POLICY")
			return nil
		}
		fmt.Fprintf(out, "# revision %d, applied %s by %s: %s\n%s", a.Revision, a.AppliedAt.Format(time.RFC3339), a.AppliedBy, a.Comment, a.Source)
		return nil
	case "history":
		list, err := store.History(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REVISION\tAPPLIED AT\tBY\tVERSION\tCOMMENT")
		for _, a := range list {
			version := ""
			if p, err := policy.Parse([]byte(a.Source)); err == nil {
				version = p.Version
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", a.Revision, a.AppliedAt.Format(time.RFC3339), a.AppliedBy, version, a.Comment)
		}
		return tw.Flush()
	default:
		return usageErr("unknown policy command %q (check, apply, show, history)", sub)
	}
}

// appliedBy is who the history records: the user of the NATS credentials
// (signed by the operator, so a flag cannot change it), or -by when NATS
// runs without authentication.
func appliedBy(c natsConfig, fs *flag.FlagSet, by string) (string, error) {
	if c.Creds == "" {
		return by, nil
	}
	u, err := natsauth.ReadCreds(c.Creds)
	if err != nil {
		return "", err
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "by" })
	if set && by != u.Name {
		return "", usageErr("-by %s: the history records the credentials' user (%s); apply with that person's credentials (switchyard operators create NAME)", by, u.Name)
	}
	return u.Name, nil
}

func defaultActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}
