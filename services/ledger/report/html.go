package report

import (
	"context"
	"fmt"
	"html"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Dashboard is the data of the HTML page: spend per day and vendor, the
// fallback rate per day and latency percentiles per vendor and model, plus
// the report the user asked for.
type Dashboard struct {
	Title     string
	Generated time.Time
	Query     Query
	Spend     *Table // day, vendor, …, cost_usd (the cost report by day, vendor)
	Fallbacks *Table // day, requests, fallbacks, fallback_rate, …
	Latency   *Table // vendor, model, attempts, p50_ms, p95_ms, p99_ms, max_ms
	Report    *Table // optional: the requested report, shown as a table
}

// LoadDashboard runs the three reports the page charts over q's time range
// (q.By is ignored: each chart has its own grouping).
func LoadDashboard(ctx context.Context, conn driver.Conn, db string, q Query) (*Dashboard, error) {
	d := &Dashboard{Title: "Switchyard ledger", Generated: time.Now().UTC(), Query: q}
	var err error
	if d.Spend, err = Cost(ctx, conn, db, Query{Since: q.Since, Until: q.Until, By: []string{"day", "vendor"}}); err != nil {
		return nil, err
	}
	if d.Fallbacks, err = Fallbacks(ctx, conn, db, Query{Since: q.Since, Until: q.Until, By: []string{"day"}}); err != nil {
		return nil, err
	}
	if d.Latency, err = Latency(ctx, conn, db, Query{Since: q.Since, Until: q.Until, By: []string{"vendor", "model"}}); err != nil {
		return nil, err
	}
	return d, nil
}

func (t *Table) col(name string) int { return slices.Index(t.Columns, name) }

func num(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

const (
	chartW, chartH     = 1000, 320
	padL, padR         = 70, 20
	padT, padB         = 20, 60
	plotW, plotH       = chartW - padL - padR, chartH - padT - padB
	chartStyle         = `font-family:sans-serif;font-size:12px`
	fmtPage            = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n"
	pageCSS            = "body{font-family:sans-serif;margin:24px;color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:32px}table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px}td.n{text-align:right}svg{background:#fafafa;border:1px solid #ddd}.legend span{display:inline-block;margin-right:14px;font-size:13px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}"
	noDataText         = "no data in this range"
	spendChartID       = "chart-spend"
	fallbackChartID    = "chart-fallback-rate"
	latencyChartID     = "chart-latency"
	latencyPercentiles = 3
)

// WriteHTML writes one self-contained page: inline CSS and SVG, no script
// and no external resource.
func (d *Dashboard) WriteHTML(w io.Writer) error {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, fmtPage, esc(d.Title), pageCSS)
	fmt.Fprintf(&b, "<h1>%s</h1>\n<p id=\"range\">%s</p>\n", esc(d.Title), esc(rangeText(d.Query, d.Generated)))

	b.WriteString("<h2>Spend over time by vendor (USD)</h2>\n")
	d.spendChart(&b)
	b.WriteString("<h2>Fallback rate</h2>\n")
	d.fallbackChart(&b)
	b.WriteString("<h2>Latency percentiles (ms, answered attempts)</h2>\n")
	d.latencyChart(&b)
	if d.Report != nil {
		b.WriteString("<h2>Report</h2>\n")
		writeTable(&b, "report", d.Report)
	}
	b.WriteString("</body>\n</html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func rangeText(q Query, gen time.Time) string {
	f := func(t time.Time, open string) string {
		if t.IsZero() {
			return open
		}
		return t.UTC().Format(time.RFC3339)
	}
	return "Range " + f(q.Since, "beginning") + " to " + f(q.Until, "now") + "; generated " + gen.UTC().Format(time.RFC3339)
}

func writeTable(b *strings.Builder, id string, t *Table) {
	fmt.Fprintf(b, "<table id=\"table-%s\">\n<thead><tr>", id)
	for _, c := range t.Columns {
		b.WriteString("<th>" + html.EscapeString(c) + "</th>")
	}
	b.WriteString("</tr></thead>\n<tbody>\n")
	for _, r := range t.Rows {
		b.WriteString("<tr>")
		for i, v := range r {
			cls := ""
			if t.isNumeric(i) {
				cls = ` class="n"`
			}
			b.WriteString("<td" + cls + ">" + html.EscapeString(v) + "</td>")
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</tbody>\n</table>\n")
}

// axis draws the frame, the y grid with labels and returns the scale.
func axis(b *strings.Builder, id, label string, maxV float64) float64 {
	if maxV <= 0 {
		maxV = 1
	}
	fmt.Fprintf(b, "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\" style=\"%s\">\n",
		id, chartW, chartH, chartW, chartH, html.EscapeString(label), chartStyle)
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		y := float64(padT+plotH) - float64(plotH)*float64(i)/4
		fmt.Fprintf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>", padL, y, chartW-padR, y)
		fmt.Fprintf(b, "<text class=\"tick\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", padL-6, y+4, strconv.FormatFloat(v, 'g', 4, 64))
	}
	fmt.Fprintf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>\n", padL, padT+plotH, chartW-padR, padT+plotH)
	return float64(plotH) / maxV
}

func xLabel(b *strings.Builder, x float64, s string) {
	fmt.Fprintf(b, "<text class=\"xlabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, padT+plotH+16, html.EscapeString(s))
}

func noData(b *strings.Builder, id string) {
	fmt.Fprintf(b, "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"60\" style=\"%s\"><text x=\"20\" y=\"35\">%s</text></svg>\n", id, chartW, chartStyle, noDataText)
}

func legend(b *strings.Builder, id string, names []string) {
	fmt.Fprintf(b, "<div class=\"legend\" id=\"legend-%s\">", id)
	for i, n := range names {
		fmt.Fprintf(b, "<span><i style=\"background:%s\"></i>%s</span>", palette[i%len(palette)], html.EscapeString(n))
	}
	b.WriteString("</div>\n")
}

// spendChart stacks each day's cost by vendor.
func (d *Dashboard) spendChart(b *strings.Builder) {
	t := d.Spend
	if t == nil || len(t.Rows) == 0 {
		noData(b, spendChartID)
		return
	}
	ci, vi, ki := t.col("day"), t.col("vendor"), t.col("cost_usd")
	var days, vendors []string
	cost := map[[2]string]float64{}
	for _, r := range t.Rows {
		day, v := r[ci], r[vi]
		if !slices.Contains(days, day) {
			days = append(days, day)
		}
		if !slices.Contains(vendors, v) {
			vendors = append(vendors, v)
		}
		cost[[2]string{day, v}] += num(r[ki])
	}
	slices.Sort(days)
	slices.Sort(vendors)
	maxV := 0.0
	for _, day := range days {
		s := 0.0
		for _, v := range vendors {
			s += cost[[2]string{day, v}]
		}
		maxV = max(maxV, s)
	}
	scale := axis(b, spendChartID, "spend per day by vendor", maxV)
	slot := float64(plotW) / float64(len(days))
	bw := min(slot*0.7, 120)
	for i, day := range days {
		x := float64(padL) + slot*float64(i) + (slot-bw)/2
		y := float64(padT + plotH)
		total := 0.0
		for vi, v := range vendors {
			c := cost[[2]string{day, v}]
			if c == 0 {
				continue
			}
			h := c * scale
			y -= h
			total += c
			fmt.Fprintf(b, "<rect class=\"bar\" data-day=\"%s\" data-vendor=\"%s\" data-value=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s %s: $%s</title></rect>\n",
				html.EscapeString(day), html.EscapeString(v), format(c), x, y, bw, h, palette[vi%len(palette)],
				html.EscapeString(day), html.EscapeString(v), format(c))
		}
		fmt.Fprintf(b, "<text class=\"value\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x+bw/2, y-4, format(round(total, 6)))
		xLabel(b, x+bw/2, day)
	}
	b.WriteString("</svg>\n")
	legend(b, spendChartID, vendors)
	writeTable(b, "spend", t)
}

// fallbackChart plots the fallback rate per day as a line with points.
func (d *Dashboard) fallbackChart(b *strings.Builder) {
	t := d.Fallbacks
	if t == nil || len(t.Rows) == 0 {
		noData(b, fallbackChartID)
		return
	}
	rows := slices.Clone(t.Rows)
	di, ri := t.col("day"), t.col("fallback_rate")
	slices.SortFunc(rows, func(a, c []string) int { return strings.Compare(a[di], c[di]) })
	scale := axis(b, fallbackChartID, "fallback rate per day", 1)
	slot := float64(plotW) / float64(len(rows))
	var pts []string
	for i, r := range rows {
		x := float64(padL) + slot*(float64(i)+0.5)
		y := float64(padT+plotH) - num(r[ri])*scale
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
	}
	fmt.Fprintf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", palette[2], strings.Join(pts, " "))
	for i, r := range rows {
		x := float64(padL) + slot*(float64(i)+0.5)
		y := float64(padT+plotH) - num(r[ri])*scale
		fmt.Fprintf(b, "<circle class=\"point\" data-day=\"%s\" data-value=\"%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%s: %s</title></circle>\n",
			html.EscapeString(r[di]), html.EscapeString(r[ri]), x, y, palette[2], html.EscapeString(r[di]), html.EscapeString(r[ri]))
		fmt.Fprintf(b, "<text class=\"value\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, y-8, html.EscapeString(r[ri]))
		xLabel(b, x, r[di])
	}
	b.WriteString("</svg>\n")
	writeTable(b, "fallbacks", t)
}

// latencyChart draws p50/p95/p99 bars per vendor and model.
func (d *Dashboard) latencyChart(b *strings.Builder) {
	t := d.Latency
	if t == nil || len(t.Rows) == 0 {
		noData(b, latencyChartID)
		return
	}
	vi, mi := t.col("vendor"), t.col("model")
	qs := []string{"p50_ms", "p95_ms", "p99_ms"}
	idx := make([]int, len(qs))
	maxV := 0.0
	for i, q := range qs {
		idx[i] = t.col(q)
		for _, r := range t.Rows {
			maxV = max(maxV, num(r[idx[i]]))
		}
	}
	scale := axis(b, latencyChartID, "latency percentiles by vendor and model", maxV)
	slot := float64(plotW) / float64(len(t.Rows))
	bw := slot * 0.8 / latencyPercentiles
	for i, r := range t.Rows {
		name := r[vi] + "/" + r[mi]
		x0 := float64(padL) + slot*float64(i) + slot*0.1
		for j, q := range qs {
			v := num(r[idx[j]])
			h := v * scale
			x := x0 + bw*float64(j)
			y := float64(padT+plotH) - h
			fmt.Fprintf(b, "<rect class=\"bar\" data-series=\"%s\" data-model=\"%s\" data-value=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s %s: %s ms</title></rect>\n",
				q, html.EscapeString(name), html.EscapeString(r[idx[j]]), x, y, bw*0.9, h, palette[j], html.EscapeString(name), q, html.EscapeString(r[idx[j]]))
			fmt.Fprintf(b, "<text class=\"value\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x+bw*0.45, y-4, html.EscapeString(r[idx[j]]))
		}
		xLabel(b, x0+bw*1.5, name)
	}
	b.WriteString("</svg>\n")
	legend(b, latencyChartID, qs)
	writeTable(b, "latency", t)
}
