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
)

func runSubmit(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("submit", errOut)
	file := fs.String("file", "", "request envelope JSON file ('-' for stdin); other flags then only fill what it leaves out")
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
	if *file != "" {
		var data []byte
		var err error
		if *file == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(*file)
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, &req); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
	} else if *prompt == "" {
		return usageErr("give -prompt or -file")
	}
	if req.ID == "" {
		req.ID = *id
	}
	if req.ID == "" {
		req.ID = fmt.Sprintf("req_%d", time.Now().UnixNano())
	}
	if req.Tenant == "" {
		req.Tenant = *tenant
	}
	if req.Route == "" {
		req.Route = *route
	}
	if req.MaxTokens == 0 {
		req.MaxTokens = *maxTokens
	}
	if *system != "" {
		req.Messages = append([]envelope.Message{{Role: "system", Content: *system}}, req.Messages...)
	}
	if *prompt != "" {
		req.Messages = append(req.Messages, envelope.Message{Role: "user", Content: *prompt})
	}
	nc, err := connectNATS("submit")
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
	reply, err := c.Submit(ctx, &req)
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
