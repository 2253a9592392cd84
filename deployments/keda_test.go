package deployments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// kedaVersion is the KEDA release whose ScaledObject CRD the manifests
// are validated against: v2.21.0, the version whose Go types they were
// decoded into before (importing those types pulled client-go and
// controller-runtime into this module, minutes of cold compile in CI).
const kedaVersion = "v2.21.0"

// scaledObject is the part of a ScaledObject the cross-checks read;
// strictness comes from the CRD schema (validateScaledObject), not from
// this struct.
type scaledObject struct {
	metav1.TypeMeta
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef *struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// kedaScaledObjectSchema compiles the v1alpha1 openAPIV3Schema of KEDA's
// published ScaledObject CRD, fetched with `go mod download` (the module
// zip holds config/crd/bases) so that no KEDA package is imported.
func kedaScaledObjectSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/kedacore/keda/v2@"+kedaVersion)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Dir == "" {
		msg := fmt.Sprintf("go mod download KEDA %s (for its ScaledObject CRD): %v %s", kedaVersion, err, mod.Error)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	raw, err := os.ReadFile(filepath.Join(mod.Dir, "config", "crd", "bases", "keda.sh_scaledobjects.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatalf("KEDA ScaledObject CRD: %v", err)
	}
	var schema map[string]any
	for _, v := range crd.Spec.Versions {
		if v.Name == "v1alpha1" {
			schema = v.Schema.OpenAPIV3Schema
		}
	}
	if schema == nil {
		t.Fatal("KEDA ScaledObject CRD: no v1alpha1 schema")
	}
	structural(schema)
	// Round-trip through JSON so numbers are what the validator expects.
	b, err := json.Marshal(schema)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("keda.sh_scaledobjects.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("keda.sh_scaledobjects.json")
	if err != nil {
		t.Fatalf("KEDA ScaledObject schema: %v", err)
	}
	return sch
}

// structural turns a CRD's structural schema into the JSON Schema the API
// server's strict field validation amounts to: an object listing its
// properties, with neither additionalProperties nor
// x-kubernetes-preserve-unknown-fields, rejects any other field;
// x-kubernetes-int-or-string takes an integer or a string. Other
// x-kubernetes-* keywords do not constrain a single document and are
// dropped.
func structural(node any) {
	switch n := node.(type) {
	case map[string]any:
		_, hasProps := n["properties"]
		_, hasAdditional := n["additionalProperties"]
		if hasProps && !hasAdditional && n["x-kubernetes-preserve-unknown-fields"] != true {
			n["additionalProperties"] = false
		}
		if n["x-kubernetes-int-or-string"] == true {
			delete(n, "anyOf") // it restates the same two types
			n["type"] = []any{"integer", "string"}
		}
		for k, v := range n {
			if strings.HasPrefix(k, "x-kubernetes-") {
				delete(n, k)
				continue
			}
			if k == "properties" { // names, not schemas: recurse into their values only
				for _, p := range v.(map[string]any) {
					structural(p)
				}
				continue
			}
			structural(v)
		}
	case []any:
		for _, v := range n {
			structural(v)
		}
	}
}

// validateScaledObject checks one ScaledObject document as an API server
// with KEDA's CRD and strict field validation would: the CRD schema for
// the whole object, metav1.ObjectMeta (decoded strictly) for metadata,
// which the CRD leaves to the server.
func validateScaledObject(sch *jsonschema.Schema, doc string) (*scaledObject, error) {
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return nil, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, err
	}
	if err := sch.Validate(inst); err != nil {
		return nil, err
	}
	var parts struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(js, &parts); err != nil {
		return nil, err
	}
	var meta metav1.ObjectMeta
	if err := yaml.UnmarshalStrict(parts.Metadata, &meta); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var so scaledObject
	if err := json.Unmarshal(js, &so); err != nil {
		return nil, err
	}
	return &so, nil
}

// TestScaledObjectSchemaRejects: the CRD validation refuses the mistakes
// the Go-type decode refused, and takes the shipped ScaledObjects.
func TestScaledObjectSchemaRejects(t *testing.T) {
	sch := kedaScaledObjectSchema(t)
	const valid = `apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: executor-x
  namespace: switchyard
spec:
  scaleTargetRef:
    name: executor-x
  minReplicaCount: 1
  maxReplicaCount: 8
  triggers:
    - type: nats-jetstream
      metadata:
        stream: LLM_PIPELINE
`
	tests := []struct{ name, old, new string }{
		{"valid", "", ""},
		{"misspelt spec field", "  minReplicaCount: 1", "  minReplicasCount: 1"},
		{"misspelt trigger field", "    - type: nats-jetstream", "    - type: nats-jetstream\n      useCachedMetric: true"},
		{"minReplicaCount a string", "minReplicaCount: 1", `minReplicaCount: "1"`},
		{"unknown top-level field", "kind: ScaledObject", "kind: ScaledObject\nstatuz: {}"},
		{"misspelt metadata field", "  namespace: switchyard", "  namespapce: switchyard"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(valid, tc.old, tc.new, 1)
			if doc == valid && tc.old != "" {
				t.Fatalf("mutation %q not applied", tc.old)
			}
			_, err := validateScaledObject(sch, doc)
			if err != nil {
				t.Log(err)
			}
			if wantErr := tc.old != ""; (err != nil) != wantErr {
				t.Errorf("error %v, want error: %v", err, wantErr)
			}
		})
	}
	t.Run("shipped", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(k8sDir, "executors.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, doc := range splitDocs(string(data)) {
			if !strings.Contains(doc, "kind: ScaledObject") {
				continue
			}
			n++
			if _, err := validateScaledObject(sch, doc); err != nil {
				t.Errorf("executors.yaml ScaledObject %d: %v", n, err)
			}
		}
		if n == 0 {
			t.Error("executors.yaml holds no ScaledObject")
		}
	})
}
