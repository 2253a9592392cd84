package gate

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// Check names reported in reply.quality.checks.
const (
	CheckNonEmpty     = "non_empty"
	CheckFinishReason = "finish_reason"
	CheckJSON         = "json"
	CheckJSONSchema   = "json_schema"
)

// Verdict is the result of judging one answer.
type Verdict struct {
	Quality envelope.Quality
	// Truncated answers pass but are flagged: the reply is marked degraded.
	Truncated bool
}

// Judge runs every check that applies to the request.
func Judge(req *envelope.Request, res *envelope.Result) Verdict {
	v := Verdict{Quality: envelope.Quality{Passed: true}}
	fail := func(check, reason string) {
		v.Quality.Passed = false
		v.Quality.Failed = append(v.Quality.Failed, check)
		if v.Quality.Reason == "" {
			v.Quality.Reason = reason
		}
	}
	v.Quality.Checks = append(v.Quality.Checks, CheckNonEmpty)
	if strings.TrimSpace(res.Content) == "" {
		fail(CheckNonEmpty, "empty content")
	}
	v.Quality.Checks = append(v.Quality.Checks, CheckFinishReason)
	if res.FinishReason == "length" {
		v.Truncated = true
		if v.Quality.Reason == "" {
			v.Quality.Reason = "answer truncated at max_tokens (finish_reason=length)"
		}
	}
	rf := req.ResponseFormat
	if rf == nil || rf.Type == "" || rf.Type == "text" || !v.Quality.Passed {
		return v
	}
	content := stripFence(res.Content)
	switch {
	case rf.Type == "json_schema" && rf.JSONSchema != nil && len(rf.JSONSchema.Schema) > 0:
		v.Quality.Checks = append(v.Quality.Checks, CheckJSONSchema)
		if err := validateSchema(rf.JSONSchema.Schema, content); err != nil {
			fail(CheckJSONSchema, err.Error())
		}
	default:
		v.Quality.Checks = append(v.Quality.Checks, CheckJSON)
		var obj map[string]any
		if err := json.Unmarshal([]byte(content), &obj); err != nil {
			fail(CheckJSON, "content is not a JSON object: "+err.Error())
		}
	}
	return v
}

// validateSchema checks content against the schema the client asked for.
func validateSchema(schema json.RawMessage, content string) error {
	// The intake refused schemas that do not compile; compiling the same
	// way here loads nothing and names no server path in its messages.
	sch, err := envelope.CompileResponseSchema(schema)
	if err != nil {
		return fmt.Errorf("requested schema %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(content))
	if err != nil {
		return fmt.Errorf("content is not valid JSON: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("content does not match the schema: %s", oneLine(err.Error()))
	}
	return nil
}

// stripFence removes a ```json fence some models wrap JSON in.
func stripFence(s string) string {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "```") {
		return t
	}
	t = strings.TrimPrefix(t, "```")
	t = strings.TrimPrefix(t, "json")
	t = strings.TrimSuffix(strings.TrimSpace(t), "```")
	return strings.TrimSpace(t)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
