package intake

import (
	"regexp"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
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

var (
	emailRe = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)
	phoneRe = regexp.MustCompile(`\+?\d[\d\s().-]{7,}\d`)
	cardRe  = regexp.MustCompile(`\b(?:\d[ -]?){13,19}\b`)
	ibanRe  = regexp.MustCompile(`\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b`)
)

// Classify infers the task, detects PII and estimates prompt tokens.
func Classify(r *envelope.Request) envelope.Classification {
	var b strings.Builder
	chars := 0
	for _, m := range r.Messages {
		chars += len(m.Content)
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
	var kinds []string
	add := func(k string) {
		for _, x := range kinds {
			if x == k {
				return
			}
		}
		kinds = append(kinds, k)
	}
	for _, m := range msgs {
		if emailRe.MatchString(m.Content) {
			add("email")
		}
		for _, s := range cardRe.FindAllString(m.Content, -1) {
			if luhn(s) {
				add("card")
			}
		}
		if ibanRe.MatchString(m.Content) {
			add("iban")
		}
		for _, s := range phoneRe.FindAllString(m.Content, -1) {
			digits := onlyDigits(s)
			if len(digits) >= 9 && len(digits) <= 15 && !luhn(s) {
				add("phone")
			}
		}
	}
	return kinds
}

func luhn(s string) bool {
	d := onlyDigits(s)
	if len(d) < 13 || len(d) > 19 {
		return false
	}
	sum := 0
	for i := range len(d) {
		n := int(d[len(d)-1-i] - '0')
		if i%2 == 1 {
			n *= 2
			if n > 9 {
				n -= 9
			}
		}
		sum += n
	}
	return sum%10 == 0
}

func onlyDigits(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
