package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// runCreds rotates a service's credentials in `up`'s data directory: a
// new file in place, the old user revoked on the running server. A
// process reading its file from <data>/creds reconnects with the new one.
func runCreds(_ context.Context, args []string, out, errOut io.Writer) error {
	const use = "creds rotate SERVICE (intake, router, gate, ledger, edge, executor-<vendor>)"
	sub, pos, err := parseSubcommand("creds", use, args, errOut, nil)
	if err != nil {
		return err
	}
	if sub != "rotate" || len(pos) != 1 {
		return usageErr(use)
	}
	cfg, auth, err := loadAuth()
	if err != nil {
		return err
	}
	vendors, err := auth.Vendors()
	if err != nil {
		return err
	}
	if err := auth.RotateService(pos[0], vendors); err != nil {
		return err
	}
	file := natsauth.CredsFile(cfg.DataDir, pos[0])
	sys := cfg
	sys.Creds = natsauth.CredsFile(cfg.DataDir, "sys")
	nc, err := dialNATS(sys, "creds")
	if err != nil {
		fmt.Fprintf(out, "wrote %s; NATS is not reachable (%v): the old credentials are refused when `up` starts\n", file, err)
		return nil
	}
	defer nc.Close()
	if err := auth.PushSwitchyard(nc); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s; the server refuses the old credentials of %s now\n", file, pos[0])
	return nil
}

// loadAuth opens the identity keys of `up`'s data directory
// (SWITCHYARD_DATA_DIR) that the identity commands sign with.
func loadAuth() (natsConfig, *natsauth.Authority, error) {
	cfg, err := loadNATSConfig()
	if err != nil {
		return cfg, nil, err
	}
	auth, err := natsauth.Load(cfg.DataDir)
	return cfg, auth, err
}
