package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"strings"
	"text/tabwriter"
)

// Formats Table.Write accepts.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatCSV   = "csv"
	FormatHTML  = "html"
)

// Formats lists the output formats.
func Formats() []string { return []string{FormatTable, FormatJSON, FormatCSV, FormatHTML} }

// Table is a report's result: named columns and rows of formatted values.
type Table struct {
	Columns []string
	Rows    [][]string

	// numeric marks the columns that hold numbers, written unquoted in
	// JSON. Nil (a Table built by hand) writes every value as a string.
	numeric []bool
}

func (t *Table) isNumeric(i int) bool { return i < len(t.numeric) && t.numeric[i] }

// Write renders the table as "table" (aligned text), "json" (an array of
// objects keyed by column, in column order), "csv" (with a header row) or
// "html" (a <table>). An empty format means "table".
func (t *Table) Write(w io.Writer, format string) error {
	switch strings.ToLower(format) {
	case "", FormatTable:
		return t.writeText(w)
	case FormatJSON:
		return t.writeJSON(w)
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(t.Columns); err != nil {
			return err
		}
		if err := cw.WriteAll(t.Rows); err != nil {
			return err
		}
		return cw.Error()
	case FormatHTML:
		return t.writeHTML(w)
	default:
		return fmt.Errorf("report: unknown format %q (want one of %s)", format, strings.Join(Formats(), ", "))
	}
}

func (t *Table) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	line(t.Columns)
	rule := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		rule[i] = strings.Repeat("-", len(c))
	}
	line(rule)
	for _, r := range t.Rows {
		line(r)
	}
	return tw.Flush()
}

func (t *Table) writeJSON(w io.Writer) error {
	var b strings.Builder
	b.WriteString("[")
	for ri, r := range t.Rows {
		if ri > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  {")
		for i, c := range t.Columns {
			if i > 0 {
				b.WriteString(", ")
			}
			k, _ := json.Marshal(c)
			b.Write(k)
			b.WriteString(": ")
			v := ""
			if i < len(r) {
				v = r[i]
			}
			if t.isNumeric(i) && json.Valid([]byte(v)) && v != "" {
				b.WriteString(v)
			} else {
				s, _ := json.Marshal(v)
				b.Write(s)
			}
		}
		b.WriteString("}")
	}
	if len(t.Rows) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func (t *Table) writeHTML(w io.Writer) error {
	var b strings.Builder
	b.WriteString("<table>\n<thead><tr>")
	for _, c := range t.Columns {
		b.WriteString("<th>" + html.EscapeString(c) + "</th>")
	}
	b.WriteString("</tr></thead>\n<tbody>\n")
	for _, r := range t.Rows {
		b.WriteString("<tr>")
		for _, v := range r {
			b.WriteString("<td>" + html.EscapeString(v) + "</td>")
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</tbody>\n</table>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
