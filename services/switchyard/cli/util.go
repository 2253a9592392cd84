package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
)

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// withUsage makes fs print a usage line (and what follows it) above its flags.
func withUsage(fs *flag.FlagSet, w io.Writer, usage string) {
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: switchyard %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
}

// parseSubcommand reads `GROUP SUB [flags] [args]`: the subcommand, the
// flags define adds (flags may stand anywhere among the arguments), and
// the positional arguments. No subcommand is a usage error; -h prints the
// usage and the flags.
func parseSubcommand(group, usage string, args []string, errOut io.Writer, define func(fs *flag.FlagSet)) (sub string, pos []string, err error) {
	if len(args) == 0 {
		return "", nil, usageErr("%s", usage)
	}
	sub, args = args[0], args[1:]
	fs := newFlags(group+" "+sub, errOut)
	withUsage(fs, errOut, usage)
	if define != nil {
		define(fs)
	}
	if isHelp(sub) {
		fs.Usage()
		return "", nil, flag.ErrHelp
	}
	pos, err = parseInterspersed(fs, args)
	return sub, pos, err
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments (`policy apply FILE -by … -m …`): Go's flag package stops at the
// first non-flag. It returns the positional arguments in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}
