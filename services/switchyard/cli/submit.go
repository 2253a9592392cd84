package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

func runSubmit(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("submit", errOut)
	file := fs.String("file", "", "request envelope JSON file ('-' for stdin), published as written; the other flags build one instead")
	id := fs.String("id", "", "request id (default: generated)")
	tenant := fs.String("tenant", "demo", "tenant")
	route := fs.String("route", "", "route (default: the classifier picks)")
	prompt := fs.String("prompt", "", "user message")
	system := fs.String("system", "", "system message")
	maxTokens := fs.Int("max-tokens", 0, "max_tokens")
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for the reply")
	if err := parse(fs, args); err != nil {
		return err
	}
	var req envelope.Request
	var raw []byte
	if *file != "" {
		// The file is published as written, so the pipeline (not this
		// command) judges it: unknown fields are refused there, not dropped.
		var err error
		if *file == "-" {
			raw, err = io.ReadAll(os.Stdin)
		} else {
			raw, err = os.ReadFile(*file)
		}
		if err != nil {
			return err
		}
		var id struct {
			ID      string `json:"id"`
			Tenant  string `json:"tenant"`
			ReplyTo string `json:"reply_to"`
		}
		if err := json.Unmarshal(raw, &id); err != nil || id.ID == "" || id.Tenant == "" {
			return usageErr("%s: not a JSON envelope with id and tenant", *file)
		}
		req.ID, req.Tenant, req.ReplyTo = id.ID, id.Tenant, id.ReplyTo
	} else {
		if *prompt == "" {
			return usageErr("give -prompt or -file")
		}
		req = envelope.Request{ID: *id, Tenant: *tenant, Route: *route, MaxTokens: *maxTokens}
		if req.ID == "" {
			req.ID = fmt.Sprintf("req_%d", time.Now().UnixNano())
		}
		if *system != "" {
			req.Messages = append(req.Messages, envelope.Message{Role: "system", Content: *system})
		}
		req.Messages = append(req.Messages, envelope.Message{Role: "user", Content: *prompt})
		var err error
		if raw, err = json.Marshal(&req); err != nil {
			return err
		}
	}
	cfg, err := loadNATSConfig()
	if err != nil {
		return err
	}
	nc, err := dialNATS(cfg, "submit")
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	// The reply is read live, or from LLM_REPLIES when the live one was
	// missed (the same id submitted again is dropped by the intake, so only
	// the stored reply answers it; a tenant's credentials read their own).
	// With a tenant's credentials the intake answers a request naming
	// another tenant on the credentials' own subject.
	subjects := []string{req.ReplySubject()}
	if cfg.Creds != "" {
		if u, err := natsauth.ReadCreds(cfg.Creds); err == nil && u.Tenant != "" && u.Tenant != req.Tenant {
			subjects = append(subjects, envelope.DefaultReplySubject(u.Tenant, req.ID))
		}
	}
	w, err := c.Await(subjects...)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := c.PublishRaw(ctx, req.MsgID(), raw); err != nil {
		return err
	}
	reply, err := w.Wait(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(reply); err != nil {
		return err
	}
	if reply.Status != envelope.StatusOK {
		return fmt.Errorf("request %s failed: %s", reply.ID, reply.Error.Code)
	}
	return nil
}
