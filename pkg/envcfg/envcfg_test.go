package envcfg

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Size int           `envconfig:"SIZE" default:"10"`
	Wait time.Duration `envconfig:"WAIT" default:"1s"`
}

// Flat is inner embedded without a prefix.
type Flat = inner

type Embedded struct {
	On bool `envconfig:"ON" default:"true"`
}

type sample struct {
	URL   string `envconfig:"NATS_URL" default:"nats://default"`
	Names []string
	Rate  float64 `envconfig:"RATE"`
	Inner inner   `envconfig:"STAGE"`
	Flat
	Skip string `ignored:"true"`
	Need string `envconfig:"NEED" required:"true"`
	Ptr  *inner `envconfig:"PTR"`
	Embedded
}

func TestProcess(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(sample) bool
		wantErr []string
	}{
		{"required reported", nil, nil, []string{"SWITCHYARD_NEED: required"}},
		{"defaults", map[string]string{"SWITCHYARD_NEED": "y"}, func(s sample) bool {
			return s.URL == "nats://default" && s.Inner.Size == 10 && s.Flat.Wait == time.Second && s.On && s.Ptr.Size == 10
		}, nil},
		{"prefixed names, nested and inline", map[string]string{"SWITCHYARD_NATS_URL": "nats://x", "SWITCHYARD_STAGE_SIZE": "3",
			"SWITCHYARD_SIZE": "4", "SWITCHYARD_ON": "false", "SWITCHYARD_NAMES": "a,b", "SWITCHYARD_NEED": "y", "SWITCHYARD_PTR_WAIT": "2m"},
			func(s sample) bool {
				return s.URL == "nats://x" && s.Inner.Size == 3 && s.Flat.Size == 4 && !s.On &&
					reflect.DeepEqual(s.Names, []string{"a", "b"}) && s.Ptr.Wait == 2*time.Minute
			}, nil},
		{"plain names are never read", map[string]string{"NATS_URL": "nats://elsewhere", "SIZE": "9", "STAGE_SIZE": "9", "NEED": "x", "SWITCHYARD_NEED": "y"},
			func(s sample) bool { return s.URL == "nats://default" && s.Inner.Size == 10 && s.Flat.Size == 10 }, nil},
		{"a bad value is named", map[string]string{"SWITCHYARD_RATE": "fast", "SWITCHYARD_NEED": "y"},
			nil, []string{"SWITCHYARD_RATE"}},
		{"a bad nested value is named", map[string]string{"SWITCHYARD_STAGE_SIZE": "x", "SWITCHYARD_NEED": "y"},
			nil, []string{"SWITCHYARD_STAGE_SIZE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			err := Process(LookupMap(tt.env), &s)
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not name %s", err, w)
				}
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatal(err)
			}
			if tt.check != nil && !tt.check(s) {
				t.Errorf("config %+v (inner %+v, ptr %+v)", s, s.Inner, *s.Ptr)
			}
		})
	}
}

func TestVariables(t *testing.T) {
	got := Variables(&sample{})
	want := []string{"SWITCHYARD_NATS_URL", "SWITCHYARD_NAMES", "SWITCHYARD_RATE", "SWITCHYARD_STAGE_SIZE", "SWITCHYARD_STAGE_WAIT",
		"SWITCHYARD_SIZE", "SWITCHYARD_WAIT", "SWITCHYARD_NEED", "SWITCHYARD_PTR_SIZE", "SWITCHYARD_PTR_WAIT", "SWITCHYARD_ON"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Variables = %v\nwant %v", got, want)
	}
}

type validated struct {
	N int `envconfig:"N" default:"1"`
}

func (v validated) Validate() error {
	if v.N < 1 {
		return errors.New("SWITCHYARD_N: must be at least 1")
	}
	return nil
}

func TestLoadFromValidates(t *testing.T) {
	var v validated
	if err := LoadFrom(LookupMap(map[string]string{"SWITCHYARD_N": "0"}), &v); err == nil || !strings.Contains(err.Error(), "at least 1") {
		t.Fatalf("err = %v", err)
	}
}
