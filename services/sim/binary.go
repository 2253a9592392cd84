package sim

// BinaryConfig is the standalone simulator's configuration (cmd/sim),
// read with envcfg.Process: SWITCHYARD_SIM_ADDR and SWITCHYARD_SIM_SCENARIO,
// never a plain ADDR or SCENARIO.
type BinaryConfig struct {
	Addr     string `envconfig:"SIM_ADDR" default:"127.0.0.1:8089"`
	Scenario string `envconfig:"SIM_SCENARIO"`
}
