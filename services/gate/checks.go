package gate

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// Check names reported in reply.quality.checks.
const (
	CheckNonEmpty     = "non_empty"
	CheckFinishReason = "finish_reason"
	CheckJSON         = "json"
	CheckJSONSchema   = "json_schema"
	CheckRefusal      = "refusal"
	CheckToxicity     = "toxicity"
)

// Options are the route's optional checks.
type Options struct {
	// Toxicity fails answers with abusive language (route toxicity: true).
	Toxicity bool
}

// abusive are phrases an answer to a customer must never contain. A word
// list is crude, but it is explainable and catches the failure that
// matters (a model insulting the user); a classifier can replace it behind
// the same check.
var abusive = []string{
	"idiot", "moron", "imbecile", "stupid question", "you are stupid", "you're stupid", "shut up",
	"kill yourself", "go to hell", "piece of shit", "fuck you", "dumbass", "retard", "loser",
}

// isToxic reports whether content contains an abusive phrase (as words,
// not inside longer words).
func isToxic(content string) bool {
	c := " " + strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '\'' {
			return unicode.ToLower(r)
		}
		return ' '
	}, content) + " "
	c = strings.Join(strings.Fields(c), " ")
	c = " " + c + " "
	for _, p := range abusive {
		if strings.Contains(c, " "+p+" ") {
			return true
		}
	}
	return false
}

// refusalOpenings start the answers models give when they decline. An
// answer that opens with one and stays short is a refusal, not an answer.
var refusalOpenings = []string{
	"i'm sorry, but i can't", "i'm sorry, but i cannot", "i am sorry, but i cannot", "i'm sorry, i can't", "i'm sorry, i cannot",
	"sorry, but i can't", "sorry, i can't", "i can't help with", "i cannot help with", "i can't assist with", "i cannot assist with",
	"i can't comply", "i cannot comply", "i'm unable to help", "i am unable to help", "i'm unable to assist", "i am unable to assist",
	"i'm not able to help", "i won't be able to help", "as an ai language model, i cannot", "as an ai, i cannot",
}

// maxRefusalLen bounds what counts as a refusal: a long answer that opens
// with an apology usually goes on to answer.
const maxRefusalLen = 400

// isRefusal reports whether content is a model declining to answer.
func isRefusal(content string) bool {
	c := strings.ToLower(strings.TrimSpace(strings.ReplaceAll(content, "’", "'")))
	if c == "" || len(c) > maxRefusalLen {
		return false
	}
	for _, p := range refusalOpenings {
		if strings.HasPrefix(c, p) {
			return true
		}
	}
	return false
}

// Verdict is the result of judging one answer.
type Verdict struct {
	Quality envelope.Quality
	// Truncated answers pass but are flagged: the reply is marked degraded.
	Truncated bool
}

// Judge runs every check that applies to the request.
func Judge(req *envelope.Request, res *envelope.Result, opts Options) Verdict {
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
	if res.FinishReason == "content_filter" {
		fail(CheckFinishReason, "the vendor's content filter stopped the answer (finish_reason=content_filter)")
	}
	v.Quality.Checks = append(v.Quality.Checks, CheckRefusal)
	if isRefusal(res.Content) {
		fail(CheckRefusal, "the model refused to answer")
	}
	if opts.Toxicity {
		v.Quality.Checks = append(v.Quality.Checks, CheckToxicity)
		if isToxic(res.Content) {
			fail(CheckToxicity, "the answer contains abusive language")
		}
	}
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
