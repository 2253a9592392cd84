package report_test

import (
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

func TestTableWrite(t *testing.T) {
	tbl := &report.Table{
		Columns: []string{"vendor", "cost_usd"},
		Rows:    [][]string{{"openai", "0.5"}, {"a,b \"<x>\"", "1"}},
	}
	tests := []struct {
		format, want string
	}{
		{"table", "vendor     cost_usd\n------     --------\nopenai     0.5\na,b \"<x>\"  1\n"},
		{"", "vendor     cost_usd\n------     --------\nopenai     0.5\na,b \"<x>\"  1\n"},
		{"csv", "vendor,cost_usd\nopenai,0.5\n\"a,b \"\"<x>\"\"\",1\n"},
		{"json", "[\n  {\"vendor\": \"openai\", \"cost_usd\": \"0.5\"},\n  {\"vendor\": \"a,b \\\"\\u003cx\\u003e\\\"\", \"cost_usd\": \"1\"}\n]\n"},
		{"html", "<table>\n<thead><tr><th>vendor</th><th>cost_usd</th></tr></thead>\n<tbody>\n" +
			"<tr><td>openai</td><td>0.5</td></tr>\n<tr><td>a,b &#34;&lt;x&gt;&#34;</td><td>1</td></tr>\n</tbody>\n</table>\n"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var b strings.Builder
			if err := tbl.Write(&b, tt.format); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
	if err := tbl.Write(&strings.Builder{}, "xml"); err == nil {
		t.Fatal("unknown format: want an error")
	}
	empty := &report.Table{Columns: []string{"a"}}
	var b strings.Builder
	if err := empty.Write(&b, "json"); err != nil || b.String() != "[]\n" {
		t.Fatalf("empty json %q, %v", b.String(), err)
	}
}
