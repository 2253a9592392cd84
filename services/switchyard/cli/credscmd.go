package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// runCreds rotates a service's credentials in `up`'s data directory: a
// new file in place, the old user revoked on the running server. A
// process reading its file from <data>/creds reconnects with the new one.
// `creds server-config` writes the auth part of an external cluster's
// configuration from the same keys.
func runCreds(_ context.Context, args []string, out, errOut io.Writer) error {
	const use = "creds rotate SERVICE (intake, router, gate, ledger, edge, executor-<vendor>)\n" +
		"       creds server-config --out FILE [--data DIR] [--resolver-dir DIR] [--vendors a,b]"
	var outFile, dataDir, resolverDir, vendorList *string
	sub, pos, err := parseSubcommand("creds", use, args, errOut, func(fs *flag.FlagSet) {
		outFile = fs.String("out", "", "server-config: write the nats-server auth include here, mode 0600")
		dataDir = fs.String("data", "", "server-config: the data directory holding the keys (default SWITCHYARD_DATA_DIR); created when new")
		resolverDir = fs.String("resolver-dir", "$NATS_RESOLVER_DIR", "server-config: each node's account JWT directory ($VAR: from the node's environment)")
		vendorList = fs.String("vendors", "", "server-config: also write every service's credentials into <data>/creds for these vendors' executors")
	})
	if err != nil {
		return err
	}
	if sub == "server-config" && len(pos) == 0 && *outFile != "" {
		cfg, err := loadNATSConfig()
		if err != nil {
			return err
		}
		if *dataDir != "" {
			cfg.DataDir = *dataDir
		}
		return writeServerConfig(cfg.DataDir, *outFile, *resolverDir, *vendorList, out)
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

// writeServerConfig writes the nats-server include that trusts the keys
// of dataDir (generated when the directory holds none), and with vendors
// the services' credentials beside them.
func writeServerConfig(dataDir, outFile, resolverDir, vendors string, out io.Writer) error {
	auth, err := natsauth.LoadOrCreate(dataDir)
	if err != nil {
		return err
	}
	if vendors != "" {
		if err := auth.WriteServiceCreds(strings.Split(vendors, ",")); err != nil {
			return err
		}
	}
	conf, err := auth.ServerConfig(resolverDir)
	if err != nil {
		return err
	}
	if err := os.WriteFile(outFile, []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.Chmod(outFile, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s (operator, system account %s, full resolver in %s); credentials in %s\n",
		outFile, auth.SystemAccount(), resolverDir, natsauth.CredsDir(dataDir))
	// Monitoring (KEDA's nats-jetstream scaler, /jsz?acc=) names an
	// account by its key: Kubernetes' ConfigMap nats-accounts holds it.
	fmt.Fprintf(out, "%s account %s\n", natsauth.AccountSwitchyard, auth.SwitchyardAccount())
	return nil
}
