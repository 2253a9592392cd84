package provider

import "sort"

// Class is the class of a failed attempt: what an adapter, the executor or
// the gate found wrong with a call. It is the one vocabulary the router
// (retry, fall over, give up), the breakers (count against the vendor or
// not), the metrics and the ledger (error_class) share. A class not listed
// in the table below is treated as a vendor failure that may be retried, so
// a new class is never silently ignored.
type Class string

// Origin says what a class tells about the vendor.
type Origin int

// Origins.
const (
	// OriginVendor: the vendor failed (5xx, overload, rate limit, timeout,
	// broken answer). Counts against its health: breakers and the
	// vendor_error_rate alert.
	OriginVendor Origin = iota + 1
	// OriginRequest: the vendor refused this request or our account (4xx).
	// The vendor is healthy; the request (or the configuration) is wrong.
	OriginRequest
	// OriginSkipped: the vendor was not called (open circuit, rpm/tpm
	// saturation). Not an attempt at all.
	OriginSkipped
	// OriginSwitchyard: Switchyard cut the call short (a hedge loser) or
	// rejected an answer (quality gate). Says nothing about the vendor.
	OriginSwitchyard
)

// Error classes. The constants keep the names every stage already uses.
const (
	ClassRateLimited     Class = "rate_limited"      // 429
	ClassTimeout         Class = "timeout"           // 408, 504, deadline, client timeout
	ClassConflict        Class = "conflict"          // 409
	ClassServerError     Class = "server_error"      // 5xx
	ClassOverloaded      Class = "overloaded"        // 529, 503 overloaded
	ClassConnection      Class = "connection"        // reset, refused
	ClassBadResponse     Class = "bad_response"      // unparseable 200, 200-with-error body, unexpected status
	ClassInvalidRequest  Class = "invalid_request"   // 400
	ClassAuth            Class = "auth"              // 401, Gemini's invalid key
	ClassForbidden       Class = "forbidden"         // 403
	ClassNotFound        Class = "not_found"         // 404, 405, 410
	ClassPayloadTooLarge Class = "payload_too_large" // 413
	ClassUnprocessable   Class = "unprocessable"     // 422
	// ClassContextLength: the prompt (plus max_tokens) does not fit the
	// model's context window. Not retried on the same model; the router may
	// move the request to a later target whose window fits.
	ClassContextLength Class = "context_length_exceeded"
	// ClassPaymentRequired: an account or billing problem (402, OpenAI's
	// insufficient_quota 429, Anthropic's "credit balance is too low",
	// Gemini's FAILED_PRECONDITION). Terminal: retrying cannot help.
	ClassPaymentRequired Class = "payment_required"
	// ClassContentRefused: the vendor refused the content for legal or
	// moderation reasons (451, OpenRouter's moderation 403).
	ClassContentRefused Class = "content_refused"
	// ClassClientError: any other 4xx. Terminal.
	ClassClientError Class = "client_error"
	// ClassPrefillUnsupported: the model refused a request ending with an
	// assistant turn (a prefill). Terminal for that target with that
	// prefill; the router restarts without it or falls over, and never
	// makes it the request's final error.
	ClassPrefillUnsupported Class = "prefill_unsupported"
	// ClassStreamStalled: a stream sent nothing within its first-token or
	// idle limit; the call was cancelled.
	ClassStreamStalled Class = "stream_stalled"
	// ClassStreamCut: the connection or body ended before the stream's end
	// marker with the answer incomplete (no final finish reason).
	ClassStreamCut Class = "stream_cut"

	// Not vendor failures: the target was skipped, the call cut short or
	// the answer rejected by Switchyard itself.
	ClassSaturated   Class = "saturated"    // vendor at its rpm/tpm limit: not called
	ClassCircuitOpen Class = "circuit_open" // breaker open: not called
	ClassCancelled   Class = "cancelled"    // hedge loser cut short: another branch answered
	ClassQuality     Class = "quality"      // answer rejected by the quality gate
)

// ClassInfo is what the router, breakers and ledger need to know about a
// class.
type ClassInfo struct {
	// Retryable: another try (same target later, or the next one) may
	// succeed, so the router falls over rather than giving up.
	Retryable bool
	Origin    Origin
	// Meaning is a short operator-facing explanation.
	Meaning string
}

var classes = map[Class]ClassInfo{
	ClassRateLimited:     {true, OriginVendor, "the vendor rate-limited the call (429)"},
	ClassTimeout:         {true, OriginVendor, "no answer in time (408, 504, attempt deadline)"},
	ClassConflict:        {true, OriginVendor, "the vendor reported a conflict (409)"},
	ClassServerError:     {true, OriginVendor, "the vendor failed (5xx)"},
	ClassOverloaded:      {true, OriginVendor, "the vendor is overloaded (529, 503 overloaded)"},
	ClassConnection:      {true, OriginVendor, "the connection failed (refused, reset)"},
	ClassBadResponse:     {true, OriginVendor, "the answer was unusable (unparseable, error in a 2xx body, unexpected status)"},
	ClassInvalidRequest:  {false, OriginRequest, "the vendor rejected the request (400)"},
	ClassAuth:            {false, OriginRequest, "the API key was refused (401)"},
	ClassForbidden:       {false, OriginRequest, "the key may not use this model or region (403)"},
	ClassNotFound:        {false, OriginRequest, "no such model or endpoint (404, 405, 410)"},
	ClassPayloadTooLarge: {false, OriginRequest, "the request body is too large (413)"},
	ClassUnprocessable:   {false, OriginRequest, "the vendor could not process the request (422)"},
	ClassContextLength:   {false, OriginRequest, "the prompt does not fit the model's context window"},
	ClassPaymentRequired: {false, OriginRequest, "account or billing problem (402, quota exhausted, credits too low)"},
	ClassContentRefused:  {false, OriginRequest, "content refused for legal or moderation reasons (451, moderation)"},
	ClassClientError:     {false, OriginRequest, "any other 4xx"},
	// Retryable so the router moves on (without the prefill, or to the
	// next target) rather than failing the request with it.
	ClassPrefillUnsupported: {true, OriginRequest, "the model does not accept an assistant prefill (400): restart without it or fall over"},
	ClassStreamStalled:      {true, OriginVendor, "the stream sent nothing within its first-token or idle limit"},
	ClassStreamCut:          {true, OriginVendor, "the stream ended before its end marker with the answer incomplete"},
	ClassSaturated:          {true, OriginSkipped, "not called: the vendor is at its rpm/tpm limit"},
	ClassCircuitOpen:        {true, OriginSkipped, "not called: the circuit breaker is open"},
	ClassCancelled:          {false, OriginSwitchyard, "cut short: another hedge branch answered"},
	ClassQuality:            {true, OriginSwitchyard, "the answer failed the quality gate"},
}

// Info returns what is known about c; ok is false for a class not in the
// table (then Retryable is true and Origin is OriginVendor).
func (c Class) Info() (info ClassInfo, ok bool) {
	info, ok = classes[c]
	if !ok {
		return ClassInfo{Retryable: true, Origin: OriginVendor, Meaning: "unknown class"}, false
	}
	return info, true
}

// Retryable reports whether another try may succeed.
func (c Class) Retryable() bool { i, _ := c.Info(); return i.Retryable }

// CountsAgainstVendor reports whether a failure of this class says the
// vendor is unhealthy: breakers and the vendor_error_rate alert count it.
func (c Class) CountsAgainstVendor() bool { i, _ := c.Info(); return i.Origin == OriginVendor }

// Called reports whether an attempt of this class reached the vendor.
func (c Class) Called() bool { i, _ := c.Info(); return i.Origin != OriginSkipped }

// String returns the class's wire name.
func (c Class) String() string { return string(c) }

// Classes lists every known class, sorted by name.
func Classes() []Class {
	out := make([]Class, 0, len(classes))
	for c := range classes {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ClassesOf lists the known classes of the given origins, sorted by name.
// The ledger's queries use it so their class lists follow this table.
func ClassesOf(origins ...Origin) []Class {
	var out []Class
	for _, c := range Classes() {
		for _, o := range origins {
			if classes[c].Origin == o {
				out = append(out, c)
				break
			}
		}
	}
	return out
}
