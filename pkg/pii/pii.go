// Package pii finds personal data in prompts (emails, phone numbers, card
// numbers that pass the Luhn check, IBANs, national ids), and redacts it
// before a vendor call with placeholders that are restored in the answer.
package pii

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Kinds of personal data.
const (
	Email      = "email"
	Phone      = "phone"
	Card       = "card"
	IBAN       = "iban"
	NationalID = "national_id"
)

type detector struct {
	kind  string
	re    *regexp.Regexp
	valid func(string) bool
}

// Order matters: cards before phones (a card number also looks like a long
// phone number), IBANs before national ids.
var detectors = []detector{
	{Email, regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`), nil},
	{IBAN, regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b`), validIBAN},
	{Card, regexp.MustCompile(`\b(?:\d[ -]?){12,18}\d\b`), luhn},
	// US SSN and similar dashed national ids.
	{NationalID, regexp.MustCompile(`\b\d{3}-\d{2}-\d{4}\b`), nil},
	{Phone, regexp.MustCompile(`\+?\d[\d\s().-]{7,}\d`), validPhone},
}

// Match is one piece of personal data in a text.
type Match struct {
	Kind       string
	Start, End int
}

// Find returns the non-overlapping matches in s, in order.
func Find(s string) []Match {
	var out []Match
	taken := func(a, b int) bool {
		for _, m := range out {
			if a < m.End && b > m.Start {
				return true
			}
		}
		return false
	}
	for _, d := range detectors {
		for _, loc := range d.re.FindAllStringIndex(s, -1) {
			if taken(loc[0], loc[1]) || d.valid != nil && !d.valid(s[loc[0]:loc[1]]) {
				continue
			}
			out = append(out, Match{Kind: d.kind, Start: loc[0], End: loc[1]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// Kinds names the kinds of personal data in the texts, each once.
func Kinds(texts ...string) []string {
	var kinds []string
	for _, t := range texts {
		for _, m := range Find(t) {
			found := false
			for _, k := range kinds {
				if k == m.Kind {
					found = true
					break
				}
			}
			if !found {
				kinds = append(kinds, m.Kind)
			}
		}
	}
	return kinds
}

// Redactor replaces personal data with numbered placeholders and restores
// them later. One Redactor serves one request, so the same value gets the
// same placeholder across its messages.
type Redactor struct {
	byValue map[string]string
	byToken map[string]string
	counts  map[string]int
}

// NewRedactor returns an empty redactor.
func NewRedactor() *Redactor {
	return &Redactor{byValue: map[string]string{}, byToken: map[string]string{}, counts: map[string]int{}}
}

// Redact replaces every match in s with a placeholder like [EMAIL_1].
func (r *Redactor) Redact(s string) string {
	ms := Find(s)
	if len(ms) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range ms {
		b.WriteString(s[last:m.Start])
		v := s[m.Start:m.End]
		tok, ok := r.byValue[v]
		if !ok {
			r.counts[m.Kind]++
			tok = "[" + strings.ToUpper(m.Kind) + "_" + strconv.Itoa(r.counts[m.Kind]) + "]"
			r.byValue[v], r.byToken[tok] = tok, v
		}
		b.WriteString(tok)
		last = m.End
	}
	b.WriteString(s[last:])
	return b.String()
}

// Redacted reports whether anything was replaced.
func (r *Redactor) Redacted() bool { return len(r.byToken) > 0 }

// Restore puts the original values back where the answer repeats a
// placeholder.
func (r *Redactor) Restore(s string) string {
	if len(r.byToken) == 0 || !strings.Contains(s, "[") {
		return s
	}
	pairs := make([]string, 0, 2*len(r.byToken))
	for tok, v := range r.byToken {
		pairs = append(pairs, tok, v)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

func digits(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func luhn(s string) bool {
	d := digits(s)
	if len(d) < 13 || len(d) > 19 {
		return false
	}
	sum := 0
	for i := range len(d) {
		n := int(d[len(d)-1-i] - '0')
		if i%2 == 1 {
			if n *= 2; n > 9 {
				n -= 9
			}
		}
		sum += n
	}
	return sum%10 == 0
}

func validPhone(s string) bool {
	n := len(digits(s))
	return n >= 9 && n <= 15
}

// validIBAN checks the ISO 13616 mod-97 checksum.
func validIBAN(s string) bool {
	s = strings.ReplaceAll(s, " ", "")
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	s = s[4:] + s[:4]
	rem := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			rem = (rem*100 + int(c-'A'+10)) % 97
		default:
			return false
		}
	}
	return rem == 1
}
