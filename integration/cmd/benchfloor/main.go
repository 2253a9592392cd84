// Command benchfloor serves Switchyard's NATS contract with the least any
// implementation of it must do (package benchfloor), for
// scripts/bench-floor.sh. Not a product: a measuring stick.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard-llm/switchyard/integration/benchfloor"
)

func main() {
	var cfg benchfloor.Config
	flag.StringVar(&cfg.StoreDir, "store", "", "JetStream store directory (required)")
	flag.IntVar(&cfg.Port, "port", 4222, "NATS client port")
	flag.StringVar(&cfg.VendorBaseURL, "vendor", "", "OpenAI-compatible vendor API root, e.g. http://127.0.0.1:21281/v1 (required)")
	flag.StringVar(&cfg.Model, "model", "gpt-4o-mini", "model named in the vendor call")
	flag.IntVar(&cfg.Concurrency, "concurrency", 64, "requests handled at once per stage")
	flag.IntVar(&cfg.Hops, "hops", 0, "durable hand-offs (JetStream publish, delivery, ack) between the delivery and the vendor call")
	flag.IntVar(&cfg.DoorHops, "door-hops", 0, "direct hand-offs on core NATS (Switchyard's DirectHandOff and DirectDoor) after those, before the vendor call")
	flag.BoolVar(&cfg.StoredReplies, "stored-replies", false, "store each reply on llm.replies.> in LLM_REPLIES first, as the contract requires and `up` does")
	flag.StringVar(&cfg.HTTPAddr, "http", "", "also serve POST /v1/chat/completions here in front of the contract (needs -stored-replies)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := benchfloor.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchfloor: %v\n", err)
		os.Exit(1)
	}
	defer f.Close()
	if a := f.HTTPAddr(); a != "" {
		fmt.Fprintf(os.Stderr, "benchfloor: HTTP front on %s\n", a)
	}
	fmt.Fprintf(os.Stderr, "benchfloor: serving on %s\n", f.ClientURL())
	if err := f.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "benchfloor: %v\n", err)
		os.Exit(1)
	}
}
