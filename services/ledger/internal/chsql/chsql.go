// Package chsql holds the conditions on attempts rows that the ledger's
// reports and alerts share, built from the error-class table in
// pkg/provider so the SQL follows it. Every condition reads the columns
// outcome and error_class; rows of classes that no longer exist, or were
// written before a class was added, are judged by the same lists.
package chsql

import (
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// list renders classes as a SQL tuple of string literals. Class names are
// fixed identifiers ([a-z_]), never user input.
func list(cs []provider.Class) string {
	q := make([]string, len(cs))
	for i, c := range cs {
		q[i] = "'" + string(c) + "'"
	}
	return "(" + strings.Join(q, ", ") + ")"
}

var (
	skipped    = list(provider.ClassesOf(provider.OriginSkipped))
	notVendor  = list(provider.ClassesOf(provider.OriginSkipped, provider.OriginSwitchyard))
	notFailure = list(provider.ClassesOf(provider.OriginSkipped, provider.OriginSwitchyard, provider.OriginRequest))
	started    = "'" + envelope.OutcomeStarted + "'"
)

// Called: the attempt reached the vendor. Skipped targets (an open
// circuit, rpm/tpm saturation) were not vendor calls; old rows of those
// classes are left out of every count.
func Called() string { return "error_class NOT IN " + skipped }

// Abandoned: a vendor call whose outcome never arrived: the executor died
// mid-call (or the call is still running). Its usage and cost are unknown.
func Abandoned() string { return "outcome = " + started }

// Concluded: a vendor call whose outcome says something about the vendor:
// not skipped, not cut short or judged by Switchyard (a hedge loser, a
// quality verdict), not still started.
func Concluded() string {
	return "outcome != " + started + " AND error_class NOT IN " + notVendor
}

// Answered: a concluded call the vendor answered (no error class).
func Answered() string { return "outcome != " + started + " AND error_class = ''" }

// Failed: a concluded call that ended in an error class, the vendor's
// fault or a refused request (4xx).
func Failed() string { return "error_class != '' AND error_class NOT IN " + notVendor }

// VendorFailed: a call that failed by the vendor's fault (5xx, overload,
// rate limit, timeout, broken answer): what counts against its health.
// Classes unknown to the table count, so a new class is never ignored.
func VendorFailed() string { return "error_class != '' AND error_class NOT IN " + notFailure }
