package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/switchyard-llm/switchyard/services/sim"
)

func runSim(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("sim", errOut)
	addr := fs.String("addr", "127.0.0.1:8089", "listen address")
	scenario := fs.String("scenario", "", "scenario JSON file")
	if err := parse(fs, args); err != nil {
		return err
	}
	var sc sim.Scenario
	if *scenario != "" {
		b, err := os.ReadFile(*scenario)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &sc); err != nil {
			return fmt.Errorf("%s: %w", *scenario, err)
		}
	}
	srv := sim.New(sc, logger(errOut, "sim", "info"))
	bound, err := srv.Start(*addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "vendor simulator on http://%s\n", bound)
	for _, k := range []string{"openai", "anthropic", "gemini", "openrouter"} {
		fmt.Fprintf(out, "  %-10s base URL %s\n", k, sim.BaseURL(bound, k))
	}
	fmt.Fprintf(out, "  control    http://%s/_sim/scenario  http://%s/_sim/calls\n", bound, bound)
	<-ctx.Done()
	return srv.Close()
}
