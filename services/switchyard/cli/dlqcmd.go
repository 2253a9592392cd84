package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
)

func runDLQ(ctx context.Context, args []string, out, errOut io.Writer) error {
	var stage, reason, tenant, since, format, patch, patchFile *string
	var seq *uint64
	var dryRun, reanswer, yes *bool
	sub, positional, err := parseSubcommand("dlq", "dlq ls|show|replay|purge [flags]  (show takes the sequence number as argument or -seq)", args, errOut, func(fs *flag.FlagSet) {
		stage = fs.String("stage", "", "intake, router, executor, gate or ledger")
		reason = fs.String("reason", "", "reason code, e.g. invalid_request, all_vendors_failed")
		tenant = fs.String("tenant", "", "tenant")
		since = fs.String("since", "", "only dead letters since: a duration ago (2h) or an RFC 3339 time")
		seq = fs.Uint64("seq", 0, "one dead letter by its stream sequence")
		format = fs.String("format", "table", "table or json (ls, show)")
		dryRun = fs.Bool("dry-run", false, "replay: show what would be replayed, publish nothing")
		patch = fs.String("patch", "", "replay: JSON merge patch applied to each request, e.g. '{\"tenant\":\"acme\"}'")
		patchFile = fs.String("patch-file", "", "replay: merge patch read from a file")
		reanswer = fs.Bool("reanswer", false, "replay: also replay requests already answered with an error that may pass now (retryable, or corrected by -patch); their clients get a second, final reply")
		yes = fs.Bool("yes", false, "purge: confirm deleting")
	})
	if err != nil {
		return err
	}
	switch {
	case sub == "show" && *seq == 0 && len(positional) == 1:
		if _, err := fmt.Sscan(positional[0], seq); err != nil {
			return usageErr("show takes a sequence number")
		}
	case len(positional) > 0:
		return usageErr("unexpected argument %q", positional[0])
	}
	f := dlq.Filter{Stage: *stage, Reason: *reason, Tenant: *tenant, Seq: *seq}
	if *since != "" {
		t, err := parseSince(*since)
		if err != nil {
			return usageErr("-since: %v", err)
		}
		f.Since = t
	}
	nc, err := connectNATS("dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	switch sub {
	case "ls":
		entries, err := dlq.List(ctx, js, f)
		if err != nil {
			return err
		}
		return printEntries(out, entries, *format)
	case "show":
		if *seq == 0 {
			return usageErr("show needs -seq N (or the number as argument)")
		}
		e, err := dlq.Get(ctx, js, *seq)
		if err != nil {
			return err
		}
		return showEntry(out, e, *format)
	case "replay":
		p := []byte(*patch)
		if *patchFile != "" {
			if p, err = os.ReadFile(*patchFile); err != nil {
				return err
			}
		}
		if len(p) > 0 && !json.Valid(p) {
			return usageErr("-patch is not valid JSON")
		}
		entries, err := dlq.List(ctx, js, f)
		if err != nil {
			return err
		}
		return replay(ctx, js, out, errOut, entries, dlq.ReplayOptions{DryRun: *dryRun, Patch: p, Reanswer: *reanswer})
	case "purge":
		entries, err := dlq.List(ctx, js, f)
		if err != nil {
			return err
		}
		if !*yes {
			fmt.Fprintf(out, "%d dead letter(s) match; run again with -yes to delete them\n", len(entries))
			return nil
		}
		n, err := dlq.Purge(ctx, js, entries)
		fmt.Fprintf(out, "purged %d dead letter(s)\n", n)
		return err
	default:
		return usageErr("unknown dlq command %q (ls, show, replay, purge)", sub)
	}
}

func replay(ctx context.Context, js jetstream.JetStream, out, errOut io.Writer, entries []dlq.Entry, o dlq.ReplayOptions) error {
	if len(entries) == 0 {
		fmt.Fprintln(out, "no dead letters match")
		return nil
	}
	failed, skipped, replayed := 0, 0, 0
	for i := range entries {
		r := dlq.Replay(ctx, js, &entries[i], o)
		second := ""
		if r.Reanswer {
			second = " (its client gets a second, final reply)"
		}
		switch {
		case r.Error != "" && !r.Replayed:
			failed++
			fmt.Fprintf(out, "seq %d (%s): not replayed: %s\n", r.Seq, r.RequestID, r.Error)
		case r.Skipped != "":
			skipped++
			fmt.Fprintf(out, "seq %d (%s): skipped: %s\n", r.Seq, r.RequestID, r.Skipped)
		case o.DryRun:
			replayed++
			fmt.Fprintf(out, "seq %d (%s): would replay the %s to %s as %s%s:\n%s\n", r.Seq, r.RequestID, r.Kind, r.Subject, r.MsgID, second, indentJSON(r.Payload))
		default:
			replayed++
			fmt.Fprintf(out, "seq %d (%s): replayed the %s to %s as %s%s\n", r.Seq, r.RequestID, r.Kind, r.Subject, r.MsgID, second)
			if r.Error != "" {
				fmt.Fprintf(out, "  warning: %s\n", r.Error)
			}
		}
		progress(errOut, i+1, len(entries))
	}
	if len(entries) > 1 {
		verb := "replayed"
		if o.DryRun {
			verb = "would replay"
		}
		fmt.Fprintf(out, "%s %d, skipped %d, failed %d of %d dead letters\n", verb, replayed, skipped, failed, len(entries))
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d dead letters were not replayed", failed, len(entries))
	}
	return nil
}

// progress draws a bar on long replays.
func progress(w io.Writer, done, total int) {
	if total < 20 {
		return
	}
	const width = 30
	n := done * width / total
	fmt.Fprintf(w, "\r[%s%s] %d/%d", strings.Repeat("#", n), strings.Repeat(".", width-n), done, total)
	if done == total {
		fmt.Fprintln(w)
	}
}

func printEntries(out io.Writer, entries []dlq.Entry, format string) error {
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if entries == nil {
			entries = []dlq.Entry{}
		}
		return enc.Encode(entries)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTAGE\tREASON\tREQUEST\tTENANT\tFAILED AT\tERROR")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Stage, e.Reason, e.RequestID, e.Tenant, e.FailedAt.Format(time.RFC3339), clip(e.Error, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d dead letter(s)\n", len(entries))
	return nil
}

func showEntry(out io.Writer, e *dlq.Entry, format string) error {
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*dlq.Entry
			Truncated int             `json:"truncated_from_bytes,omitempty"`
			Payload   json.RawMessage `json:"payload"`
		}{e, e.Truncated(), asJSON(e.Data)})
	}
	fmt.Fprintf(out, "seq:        %d\nsubject:    %s\nstage:      %s\nreason:     %s\nrequest:    %s\ntenant:     %s\nfailed at:  %s\nerror:      %s\n",
		e.Seq, e.Subject, e.Stage, e.Reason, e.RequestID, e.Tenant, e.FailedAt.Format(time.RFC3339Nano), e.Error)
	if n := e.Truncated(); n > 0 {
		fmt.Fprintf(out, "truncated:  yes: the payload was %d bytes; the first %d are kept (not replayable)\n", n, len(e.Data))
	}
	fmt.Fprintf(out, "payload:\n%s\n", e.Data)
	return nil
}

// indentJSON pretty-prints a payload for a dry run.
func indentJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "  ", "  ") != nil {
		return "  " + string(b)
	}
	return "  " + buf.String()
}

func asJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (2h) nor a date/time (RFC 3339)", s)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
