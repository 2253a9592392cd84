// Command switchyard is the operator's tool: run the whole pipeline, submit
// requests, read reports, replay dead letters, run the vendor simulator.
package main

import (
	"os"

	"github.com/switchyard-llm/switchyard/services/switchyard/cli"
)

func main() {
	ctx, stop := cli.SignalContext()
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
