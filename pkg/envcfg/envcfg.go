// Package envcfg reads configuration structs from SWITCHYARD_* environment
// variables with github.com/kelseyhightower/envconfig (tags `envconfig`,
// `default`, `required`, `ignored`, `split_words`; a nested struct adds its
// key as a prefix, an embedded one adds nothing), with two changes every
// binary needs:
//
//   - only the SWITCHYARD_ name is read. envconfig falls back to the
//     unprefixed name of a tagged field (NATS_URL for SWITCHYARD_NATS_URL),
//     so a natscli user's NATS_URL or a shell's LOG_LEVEL would silently
//     change what a Switchyard process does; Process hides those names
//     while envconfig runs;
//   - the values come from a Lookup: os.LookupEnv in a binary, a map in a
//     test, so a test never depends on the developer's shell.
package envcfg

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/template"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is the environment prefix of every setting.
const Prefix = "SWITCHYARD"

// Validator is a config that can check itself.
type Validator interface{ Validate() error }

// Lookup finds one environment variable; os.LookupEnv in a binary, a map in
// a test.
type Lookup func(key string) (string, bool)

// LookupMap is a Lookup over fixed values.
func LookupMap(env map[string]string) Lookup {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// names lists each variable as "KEY ALT" (ALT is envconfig's unprefixed
// fallback, empty for untagged fields), through envconfig's own usage walk
// so the keys are exactly the ones it reads.
var names = template.Must(template.New("names").Parse("{{range .}}{{.Key}} {{.Alt}}\n{{end}}"))

type variable struct{ key, alt string }

func variables(cfg any) ([]variable, error) {
	var buf bytes.Buffer
	if err := envconfig.Usaget(Prefix, cfg, &buf, names); err != nil {
		return nil, err
	}
	var out []variable
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		key, alt, _ := strings.Cut(sc.Text(), " ")
		if key != "" {
			out = append(out, variable{key: key, alt: alt})
		}
	}
	return out, sc.Err()
}

// Variables lists every variable cfg reads, in field order.
func Variables(cfg any) []string {
	vars, _ := variables(cfg)
	keys := make([]string, len(vars))
	for i, v := range vars {
		keys[i] = v.key
	}
	return keys
}

// envMu serialises Process: envconfig reads only the process environment,
// which Process arranges for the duration of one call.
var envMu sync.Mutex

// Process fills cfg from lookup (see the package comment).
func Process(lookup Lookup, cfg any) error {
	vars, err := variables(cfg)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	envMu.Lock()
	defer envMu.Unlock()
	type saved struct {
		value string
		set   bool
	}
	restore := map[string]saved{}
	put := func(name, value string, set bool) {
		if _, done := restore[name]; !done {
			old, had := os.LookupEnv(name)
			restore[name] = saved{old, had}
		}
		if set {
			_ = os.Setenv(name, value)
		} else {
			_ = os.Unsetenv(name)
		}
	}
	defer func() {
		for name, s := range restore {
			if s.set {
				_ = os.Setenv(name, s.value)
			} else {
				_ = os.Unsetenv(name)
			}
		}
	}()
	for _, v := range vars {
		if v.alt != "" && v.alt != v.key {
			put(v.alt, "", false)
		}
	}
	for _, v := range vars {
		value, ok := lookup(v.key)
		put(v.key, value, ok)
	}
	err = envconfig.Process(Prefix, cfg)
	if missing, ok := strings.CutPrefix(fmt.Sprint(err), "required key "); ok && err != nil {
		// envconfig names a missing required variable by its unprefixed
		// fallback; name the one Switchyard reads.
		name, _, _ := strings.Cut(missing, " ")
		for _, v := range vars {
			if v.alt == name || v.key == name {
				return fmt.Errorf("%s: required", v.key)
			}
		}
	}
	return err
}

// LoadFrom fills cfg from lookup and validates it; a mistyped value fails
// loudly here rather than misbehaving later.
func LoadFrom(lookup Lookup, cfg Validator) error {
	if err := Process(lookup, cfg); err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	return nil
}

// Load is LoadFrom the process environment.
func Load(cfg Validator) error { return LoadFrom(os.LookupEnv, cfg) }
