// Package envcfg reads configuration structs from SWITCHYARD_* environment
// variables. It is small and dependency-free so every binary, the simulator
// included, reads settings the same way.
package envcfg

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
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

// Process fills cfg from lookup with the envconfig tag conventions the
// config structs use (`envconfig:"NAME"`, `default`, `required`, `ignored`;
// a nested struct adds its tag as a prefix, an embedded one or one tagged
// `inline:"true"` adds nothing),
// every name under SWITCHYARD_. Unlike envconfig.Process it never falls
// back to the unprefixed name: a natscli user's NATS_URL or a shell's
// LOG_LEVEL must not change what a Switchyard process does. Every
// unparsable value is reported, not only the first.
func Process(lookup Lookup, cfg any) error {
	var errs []error
	err := walk(Prefix, cfg, func(key string, f reflect.Value, tag reflect.StructTag) {
		value, ok := lookup(key)
		if !ok {
			if value, ok = tag.Lookup("default"); !ok {
				if tag.Get("required") == "true" {
					errs = append(errs, fmt.Errorf("%s: required", key))
				}
				return
			}
		}
		if err := set(f, value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", key, value, err))
		}
	})
	if err != nil {
		return err
	}
	return errors.Join(errs...)
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

// Variables lists every variable cfg reads, in field order.
func Variables(cfg any) []string {
	var keys []string
	_ = walk(Prefix, cfg, func(key string, _ reflect.Value, _ reflect.StructTag) { keys = append(keys, key) })
	return keys
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walk calls fn for every settable leaf field of the struct cfg points to.
func walk(prefix string, cfg any, fn func(key string, f reflect.Value, tag reflect.StructTag)) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: %T is not a pointer to a struct", cfg)
	}
	walkStruct(prefix, v.Elem(), fn)
	return nil
}

func walkStruct(prefix string, s reflect.Value, fn func(string, reflect.Value, reflect.StructTag)) {
	t := s.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		f := s.Field(i)
		if !f.CanSet() || sf.Tag.Get("ignored") == "true" {
			continue
		}
		name := sf.Tag.Get("envconfig")
		if name == "" {
			name = sf.Name
		}
		key := strings.ToUpper(prefix + "_" + name)
		if f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct && !isLeaf(f.Type()) {
			if f.IsNil() {
				f.Set(reflect.New(f.Type().Elem()))
			}
			f = f.Elem()
		}
		if f.Kind() == reflect.Struct && !isLeaf(f.Type()) {
			if sf.Anonymous || sf.Tag.Get("inline") == "true" {
				walkStruct(prefix, f, fn)
			} else {
				walkStruct(key, f, fn)
			}
			continue
		}
		fn(key, f, sf.Tag)
	}
}

// isLeaf reports whether a struct type parses itself from text.
func isLeaf(t reflect.Type) bool {
	return t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType)
}

func set(f reflect.Value, value string) error {
	if f.CanAddr() && f.Addr().Type().Implements(textUnmarshalerType) {
		return f.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(value))
	}
	switch {
	case f.Type() == durationType:
		d, err := time.ParseDuration(value)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
		return nil
	case f.Kind() == reflect.Slice:
		parts := []string{}
		if strings.TrimSpace(value) != "" {
			parts = strings.Split(value, ",")
		}
		s := reflect.MakeSlice(f.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := set(s.Index(i), strings.TrimSpace(p)); err != nil {
				return err
			}
		}
		f.Set(s)
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(value)
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(value, 0, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(value, 0, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetUint(n)
	case reflect.Float32, reflect.Float64:
		x, err := strconv.ParseFloat(value, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetFloat(x)
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
