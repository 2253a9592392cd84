package pii

import (
	"reflect"
	"testing"
)

func TestKinds(t *testing.T) {
	tests := []struct {
		text string
		want []string
	}{
		{"nothing here", nil},
		{"mail ana@example.com", []string{Email}},
		{"card 4111 1111 1111 1111", []string{Card}},
		{"card 4111 1111 1111 1112 fails luhn", nil},
		{"iban DE89 3704 0044 0532 0130 00", []string{IBAN}},
		{"iban DE89370400440532013000", []string{IBAN}},
		{"bad iban DE00370400440532013000", nil},
		{"ssn 123-45-6789", []string{NationalID}},
		{"call +44 20 7946 0958", []string{Phone}},
		{"order 12345 of 2026", nil},
		{"ana@example.com, +1 415 555 0100", []string{Email, Phone}},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			if got := Kinds(tt.text); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Kinds = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRedactRestore(t *testing.T) {
	r := NewRedactor()
	in := "Write to ana@example.com or bob@example.org; ana@example.com prefers mail. Card 4111 1111 1111 1111."
	red := r.Redact(in)
	want := "Write to [EMAIL_1] or [EMAIL_2]; [EMAIL_1] prefers mail. Card [CARD_1]."
	if red != want {
		t.Fatalf("Redact = %q\nwant %q", red, want)
	}
	answer := "Dear [EMAIL_1], we charged [CARD_1]."
	if got := r.Restore(answer); got != "Dear ana@example.com, we charged 4111 1111 1111 1111." {
		t.Fatalf("Restore = %q", got)
	}
	if !r.Redacted() {
		t.Fatal("Redacted = false")
	}
}

func FuzzRedactRestore(f *testing.F) {
	f.Add("mail ana@example.com and call +44 20 7946 0958")
	f.Fuzz(func(t *testing.T, s string) {
		r := NewRedactor()
		red := r.Redact(s)
		if got := r.Restore(red); got != s && !containsPlaceholderLike(s) {
			t.Fatalf("round trip changed %q into %q", s, got)
		}
	})
}

// A text that already contains placeholder-like tokens may not round-trip.
func containsPlaceholderLike(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '[' {
			return true
		}
	}
	return false
}
