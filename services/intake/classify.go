package intake

import (
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/pii"
)

// Task classes the classifier assigns.
const (
	TaskChat      = "chat"
	TaskSummarize = "summarize"
	TaskExtract   = "extract"
	TaskCode      = "code"
	TaskReasoning = "reasoning"
)

// Rules are checked in order against the lower-cased user text; the first
// hit wins. Keyword rules are cheap, explainable and good enough to route;
// a learned classifier can replace them behind the same function.
var taskRules = []struct {
	task  string
	words []string
}{
	{TaskCode, []string{"```", "func ", "def ", "class ", "stack trace", "compile", "refactor", "unit test", "golang", "python", "javascript", "sql query"}},
	{TaskExtract, []string{"extract", "parse the", "as json", "fields:", "pull out", "list all"}},
	{TaskSummarize, []string{"summarize", "summarise", "summary", "tl;dr", "tldr", "condense"}},
	{TaskReasoning, []string{"prove", "step by step", "why does", "reason about", "solve", "calculate", "derive"}},
}

// Classify infers the task, detects PII and estimates prompt tokens.
func Classify(r *envelope.Request) envelope.Classification {
	var b strings.Builder
	for _, m := range r.Messages {
		if m.Role == "user" {
			b.WriteString(strings.ToLower(m.Content))
			b.WriteByte('\n')
		}
	}
	text := b.String()
	c := envelope.Classification{Task: TaskChat, TokenEstimate: EstimateTokens(r)}
	if r.ResponseFormat != nil && r.ResponseFormat.Type != "text" {
		c.Task = TaskExtract
	}
	for _, rule := range taskRules {
		if containsAny(text, rule.words) {
			c.Task = rule.task
			break
		}
	}
	c.PII = DetectPII(r.Messages)
	c.Sensitive = len(c.PII) > 0
	return c
}

// EstimateTokens approximates prompt tokens as four characters per token plus
// a few tokens of framing per message, and adds the output budget.
func EstimateTokens(r *envelope.Request) int {
	n := 0
	for _, m := range r.Messages {
		n += len(m.Content)/4 + 4
	}
	return n + r.MaxTokens
}

// DetectPII names the kinds of personal data found in the messages.
func DetectPII(msgs []envelope.Message) []string {
	texts := make([]string, len(msgs))
	for i, m := range msgs {
		texts[i] = m.Content
	}
	return pii.Kinds(texts...)
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
