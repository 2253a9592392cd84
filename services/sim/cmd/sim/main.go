// Command sim runs the vendor simulator alone.
//
//	SWITCHYARD_SIM_ADDR      listen address (default 127.0.0.1:8089)
//	SWITCHYARD_SIM_SCENARIO  optional scenario JSON file
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/services/sim"
)

func main() {
	log := zerolog.New(os.Stderr).With().Timestamp().Str("service", "sim").Logger()
	var cfg sim.BinaryConfig
	if err := envcfg.Process(os.LookupEnv, &cfg); err != nil {
		log.Fatal().Err(err).Msg("config")
	}
	var sc sim.Scenario
	if cfg.Scenario != "" {
		var err error
		if sc, err = sim.LoadScenario(cfg.Scenario); err != nil {
			log.Fatal().Err(err).Str("file", cfg.Scenario).Msg("scenario")
		}
	}
	srv := sim.New(sc, log)
	addr, err := srv.Start(cfg.Addr)
	if err != nil {
		log.Fatal().Err(err).Msg("listen")
	}
	for _, v := range []string{sim.VendorOpenAI, sim.VendorAnthropic, sim.VendorGemini, sim.VendorOpenRouter} {
		log.Info().Str("vendor", v).Str("base_url", sim.BaseURL(addr, v)).Msg("endpoint")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error().Err(err).Msg("shutdown")
		_ = srv.Close()
	}
}
