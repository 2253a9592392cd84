package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
)

// runOperators issues an operator's own credentials (every right in the
// pipeline's account, under their name) with the keys of `up`'s data
// directory: `policy apply` records that name.
func runOperators(_ context.Context, args []string, out, errOut io.Writer) error {
	const use = "operators create NAME --out FILE"
	var outFile *string
	sub, pos, err := parseSubcommand("operators", use, args, errOut, func(fs *flag.FlagSet) {
		outFile = fs.String("out", "", "write the credentials file here, mode 0600")
	})
	if err != nil {
		return err
	}
	if sub != "create" || len(pos) != 1 || *outFile == "" {
		return usageErr(use)
	}
	_, auth, err := loadAuth()
	if err != nil {
		return err
	}
	creds, err := auth.CreateOperator(pos[0])
	if err != nil {
		return err
	}
	if err := os.WriteFile(*outFile, creds, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(*outFile, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s for operator %s: SWITCHYARD_NATS_CREDS=%s switchyard policy apply FILE -m '...'\n", *outFile, pos[0], *outFile)
	return nil
}
