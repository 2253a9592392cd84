package deployments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// kedaVersion is the KEDA release whose ScaledObject the manifests are
// checked against, twice: decoded strictly into KEDA's own Go type
// (kedaDecoder) and validated against the release's CRD schema.
const kedaVersion = "v2.21.0"

// scaledObject is the part of a ScaledObject the cross-checks read, filled
// from KEDA's own type (kedaDecoder encodes what it decoded).
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

// kedaModuleDir fetches the KEDA release's module with `go mod download`
// (the zip holds its API types and config/crd/bases) without making it a
// requirement of this module: importing its API package would compile
// controller-runtime and client-go too (see kedaDecoder).
func kedaModuleDir(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/kedacore/keda/v2@"+kedaVersion)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Dir == "" {
		msg := fmt.Sprintf("go mod download KEDA %s: %v %s", kedaVersion, err, mod.Error)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return mod.Dir
}

// kedaDecoder runs testdata/kedatypes: ScaledObjects decoded strictly into
// KEDA's v1alpha1.ScaledObject, then KEDA's webhook checks that need no
// cluster.
type kedaDecoder struct{ dir, bin string }

// kedaDecoded is one document's result.
type kedaDecoded struct {
	Name   string          `json:"name"`
	Error  string          `json:"error"`
	Object json.RawMessage `json:"object"`
}

// kedaBuild is the decoder, built once for all the tests of this package
// (compiling KEDA's types and linking takes seconds); TestMain removes it.
var kedaBuild struct {
	once sync.Once
	dec  *kedaDecoder
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kedaBuild.dec != nil {
		_ = os.RemoveAll(kedaBuild.dec.dir)
	}
	os.Exit(code)
}

// newKEDADecoder returns the decoder, building it on first use.
func newKEDADecoder(t *testing.T) *kedaDecoder {
	t.Helper()
	src := filepath.Join(kedaModuleDir(t), "apis", "keda", "v1alpha1")
	kedaBuild.once.Do(func() { kedaBuild.dec, kedaBuild.err = buildKEDADecoder(src) })
	if kedaBuild.err != nil {
		t.Fatal(kedaBuild.err)
	}
	return kedaBuild.dec
}

// buildKEDADecoder builds testdata/kedatypes in a scratch module against
// KEDA's API package (src), compiled from its own files but for the three
// webhook files: they import controller-runtime and client-go (with them
// this module's cold test build compiled 1031 packages instead of 531).
// What the other files use of them (the validators' empty struct types, a
// few string constants) is copied from them by kedaWebhookDecls; a KEDA
// release that needs more fails the build here.
func buildKEDADecoder(src string) (dec *kedaDecoder, err error) {
	work, err := os.MkdirTemp("", "kedatypes-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(work)
		}
	}()
	pkgDir := filepath.Join(work, "v1alpha1")
	if err := os.Mkdir(pkgDir, 0o755); err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(src, "*.go"))
	if err != nil {
		return nil, err
	}
	var webhook []string
	for _, f := range files {
		switch base := filepath.Base(f); {
		case strings.HasSuffix(base, "_test.go"):
		case strings.HasSuffix(base, "_webhook.go"):
			webhook = append(webhook, f)
		case base == "scalable_object.go": // an interface embedding controller-runtime's client.Object
		default:
			if err := copyFile(f, filepath.Join(pkgDir, base)); err != nil {
				return nil, err
			}
		}
	}
	if len(webhook) == 0 {
		return nil, fmt.Errorf("KEDA %s: no webhook files in %s (layout changed?)", kedaVersion, src)
	}
	decls, err := kedaWebhookDecls(webhook)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(pkgDir, "zz_webhook_decls.go"), decls, 0o644); err != nil {
		return nil, err
	}
	// This module's requirements (so the scratch module builds with the
	// same k8s.io and sigs.k8s.io/yaml versions, from the module cache),
	// its sibling replaces made absolute.
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		return nil, err
	}
	parent, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	mod := strings.Replace(string(gomod), "module github.com/switchyard-llm/switchyard/deployments", "module kedatypes", 1)
	mod = strings.ReplaceAll(mod, "=> ../", "=> "+parent+"/")
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(mod), 0o644); err != nil {
		return nil, err
	}
	for from, to := range map[string]string{"go.sum": "go.sum", filepath.Join("testdata", "kedatypes", "main.go"): "main.go"} {
		if err := copyFile(from, filepath.Join(work, to)); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(work, "kedatypes")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build KEDA %s's v1alpha1 types without its webhook files: %w\n%s", kedaVersion, err, out)
	}
	return &kedaDecoder{dir: work, bin: bin}, nil
}

// kedaWebhookDecls copies from KEDA's webhook files the top-level
// declarations that use no import (e.g. `type ScaledObjectCustomValidator
// struct{}`, `var cpuString = "cpu"`): the type files refer to some of
// them (zz_generated.deepcopy.go, the replica and trigger checks).
func kedaWebhookDecls(files []string) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("// Code generated by deployments/keda_test.go from KEDA's webhook files. DO NOT EDIT.\n\npackage v1alpha1\n")
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			return nil, err
		}
		for _, decl := range file.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok == token.IMPORT {
				continue
			}
			for _, spec := range gen.Specs {
				importFree := true
				ast.Inspect(spec, func(n ast.Node) bool {
					switch n.(type) {
					case *ast.SelectorExpr, *ast.CallExpr:
						importFree = false
					}
					return importFree
				})
				if !importFree {
					continue
				}
				buf.WriteString("\n" + gen.Tok.String() + " ")
				if err := printer.Fprint(&buf, fset, spec); err != nil {
					return nil, err
				}
				buf.WriteString("\n")
			}
		}
	}
	return buf.Bytes(), nil
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o644)
}

// decode runs the decoder once over docs (name → YAML document).
func (d *kedaDecoder) decode(t *testing.T, docs map[string]string) map[string]kedaDecoded {
	t.Helper()
	if len(docs) == 0 {
		return nil
	}
	type input struct {
		Name string `json:"name"`
		YAML string `json:"yaml"`
	}
	var in []input
	for _, name := range sortedKeys(docs) {
		in = append(in, input{name, docs[name]})
	}
	stdin, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.bin)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kedatypes: %v\n%s", err, stderr.String())
	}
	var results []kedaDecoded
	if err := json.Unmarshal(out, &results); err != nil {
		t.Fatalf("kedatypes output: %v", err)
	}
	byName := map[string]kedaDecoded{}
	for _, r := range results {
		byName[r.Name] = r
	}
	if len(byName) != len(docs) {
		t.Fatalf("kedatypes answered %d of %d documents", len(byName), len(docs))
	}
	return byName
}

// scaledObject reads the fields the cross-checks use from a document the
// decoder took, or returns the decoder's error.
func (r kedaDecoded) scaledObject() (*scaledObject, error) {
	if r.Error != "" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	var so scaledObject
	if err := json.Unmarshal(r.Object, &so); err != nil {
		return nil, err
	}
	return &so, nil
}

// kedaScaledObjectSchema compiles the v1alpha1 openAPIV3Schema of the
// release's ScaledObject CRD. It checks what decoding into the Go type
// cannot, and what an API server with KEDA installed refuses before
// KEDA's webhook sees the object: required fields, minimums (a negative
// replica count), enums, patterns.
func kedaScaledObjectSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kedaModuleDir(t), "config", "crd", "bases", "keda.sh_scaledobjects.yaml"))
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
// x-kubernetes-* keywords (the CEL rules among them) are dropped.
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

// validateScaledObjectSchema checks one ScaledObject document as an API
// server with KEDA's CRD and strict field validation would: the CRD
// schema for the whole object, metav1.ObjectMeta (decoded strictly) for
// metadata, which the CRD leaves to the server.
func validateScaledObjectSchema(sch *jsonschema.Schema, doc string) error {
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return err
	}
	if err := sch.Validate(inst); err != nil {
		return err
	}
	var parts struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(js, &parts); err != nil {
		return err
	}
	var meta metav1.ObjectMeta
	if err := yaml.UnmarshalStrict(parts.Metadata, &meta); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	return nil
}

// TestScaledObjectChecksCatch mutates a shipped ScaledObject and shows
// which check refuses each mistake: the CRD schema, the decode into
// KEDA's Go type (with KEDA's webhook checks), the cross-references to
// the topology (checkExecutorsAndScalers; a document KEDA's type refuses
// is not cross-checked). The unchanged document passes all three.
func TestScaledObjectChecksCatch(t *testing.T) {
	keda := newKEDADecoder(t)
	m := loadManifests(t, keda)
	pol := loadPolicy(t, "policy.yaml")
	data, err := os.ReadFile(filepath.Join(k8sDir, "executors.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var shipped string
	for _, doc := range splitDocs(string(data)) {
		if strings.Contains(doc, "kind: ScaledObject") && strings.Contains(doc, "name: executor-openai") {
			shipped = stripComments(doc)
		}
	}
	if shipped == "" {
		t.Fatal("executors.yaml: no ScaledObject executor-openai")
	}
	const (
		schema = 1 << iota
		types
		xref
	)
	tests := []struct {
		name, old, new string
		want           int // the checks that must refuse it
	}{
		{"valid", "", "", 0},
		{"misspelt trigger field triggers[0].metdata", "      metadata:", "      metdata:", schema | types},
		{"misspelt spec field", "  minReplicaCount: 1", "  minReplicasCount: 1", schema | types},
		{"misspelt object metadata field", "  namespace: switchyard", "  namespapce: switchyard", schema | types},
		{"minReplicaCount a string", "minReplicaCount: 1", `minReplicaCount: "1"`, schema | types},
		{"negative minReplicaCount", "minReplicaCount: 1", "minReplicaCount: -1", schema | xref},
		{"idleReplicaCount not below minReplicaCount", "  minReplicaCount: 1", "  minReplicaCount: 1\n  idleReplicaCount: 1", types},
		{"minReplicaCount above maxReplicaCount", "minReplicaCount: 1", "minReplicaCount: 9", types},
		{"stream not in the topology", "stream: LLM_PIPELINE", "stream: LLM_PIPELINES", xref},
		{"consumer no executor creates", "consumer: exec-openai", "consumer: executor-openai", xref},
		{"another vendor's consumer", "consumer: exec-openai", "consumer: exec-anthropic", xref},
		{"monitoring port not NATS's monitor port", "cluster.local:8222", "cluster.local:4222", xref},
		{"monitoring endpoint one pod, not the headless Service", "nats-headless.switchyard", "nats-0.nats-headless.switchyard", xref},
		{"metadata key not of the nats-jetstream scaler", "        lagThreshold:", "        lagTreshold:", xref},
		{"scales a Deployment that is no executor", "    name: executor-openai\n  min", "    name: router\n  min", xref},
	}
	docs := map[string]string{}
	for _, tc := range tests {
		doc := strings.Replace(shipped, tc.old, tc.new, 1)
		if doc == shipped && tc.old != "" {
			t.Fatalf("%s: mutation %q not applied", tc.name, tc.old)
		}
		docs[tc.name] = doc
	}
	sch := kedaScaledObjectSchema(t)
	decoded := keda.decode(t, docs)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := 0
			if err := validateScaledObjectSchema(sch, docs[tc.name]); err != nil {
				got |= schema
				t.Logf("CRD schema: %v", err)
			}
			so, err := decoded[tc.name].scaledObject()
			if err != nil {
				got |= types
				t.Logf("KEDA's type: %v", err)
			} else {
				// The manifests with this ScaledObject in place of the shipped one.
				with := *m
				with.scaled = map[string]*scaledObject{}
				for name, o := range m.scaled {
					with.scaled[name] = o
				}
				with.scaled["executor-openai"] = so
				rec := &recorder{}
				checkExecutorsAndScalers(rec, &with, pol)
				if len(rec.errs) > 0 {
					got |= xref
					t.Logf("cross-references: %v", rec.errs)
				}
			}
			names := func(set int) string {
				return fmt.Sprintf("schema:%v types:%v cross-references:%v", set&schema != 0, set&types != 0, set&xref != 0)
			}
			if got != tc.want {
				t.Errorf("refused by %s, want %s", names(got), names(tc.want))
			}
		})
	}
}
