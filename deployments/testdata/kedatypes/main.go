// Command kedatypes decodes ScaledObjects strictly into KEDA's own Go type
// (github.com/kedacore/keda/v2/apis/keda/v1alpha1) and runs the checks of
// KEDA's admission webhook that need no cluster. keda_test.go builds it in a
// scratch module from the type files of the pinned KEDA release (the
// package's webhook files are left out: they pull controller-runtime and
// client-go, minutes of cold compile).
//
// Input (stdin): a JSON array of {"name", "yaml"}. Output (stdout): a JSON
// array of {"name", "error", "object"}, object being the decoded
// ScaledObject encoded again from the KEDA type.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	keda "kedatypes/v1alpha1"
)

type input struct {
	Name string `json:"name"`
	YAML string `json:"yaml"`
}

type output struct {
	Name   string             `json:"name"`
	Error  string             `json:"error,omitempty"`
	Object *keda.ScaledObject `json:"object,omitempty"`
}

func main() {
	var in []input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "kedatypes: read input:", err)
		os.Exit(2)
	}
	out := make([]output, 0, len(in))
	for _, doc := range in {
		so, err := decode(doc.YAML)
		o := output{Name: doc.Name, Object: so}
		if err != nil {
			o.Error = err.Error()
		}
		out = append(out, o)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "kedatypes: write output:", err)
		os.Exit(2)
	}
}

// decode: unknown or misspelt fields and wrong types fail (strict), then
// the replica bounds, fallback and trigger checks KEDA's webhook runs
// (verifyReplicaCount, verifyFallback, verifyTriggers).
func decode(doc string) (*keda.ScaledObject, error) {
	so := &keda.ScaledObject{}
	if err := yaml.UnmarshalStrict([]byte(doc), so); err != nil {
		return nil, fmt.Errorf("decode into KEDA's ScaledObject: %w", err)
	}
	for _, check := range []func() error{
		func() error { return keda.CheckReplicaCountBoundsAreValid(so) },
		func() error { return keda.CheckFallbackValid(so) },
		func() error { return keda.ValidateTriggers(so.Spec.Triggers) },
	} {
		if err := check(); err != nil {
			return so, fmt.Errorf("KEDA's webhook check: %w", err)
		}
	}
	return so, nil
}
