package edge

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// apiError is an error answer before it takes an API's shape.
type apiError struct {
	Status     int
	Code       string // Switchyard's stable code, or the edge's own (invalid_api_key …)
	Message    string
	RetryAfter int // seconds; > 0 sets retry-after
}

// Switchyard headers: the request envelope's own fields that neither API has.
const (
	HeaderEndpointTag    = "X-Switchyard-Endpoint-Tag"
	HeaderPromptVersion  = "X-Switchyard-Prompt-Version"
	HeaderStakes         = "X-Switchyard-Stakes"
	HeaderResidency      = "X-Switchyard-Residency"
	HeaderMaxCostUSD     = "X-Switchyard-Max-Cost-Usd"
	HeaderIdempotencyKey = "X-Switchyard-Idempotency-Key"
	HeaderTimeoutMS      = "X-Switchyard-Timeout-Ms"
)

// metaIdempotent marks (in the envelope's metadata) a request whose id the
// client chose, so a repeat is answered from the stored reply.
const metaIdempotent = "switchyard_idempotency_key"

// metaFields are the OpenAI metadata keys read as Switchyard fields (the
// headers win); every other metadata entry travels as metadata.
var metaFields = map[string]string{
	"endpoint_tag": HeaderEndpointTag, "prompt_version": HeaderPromptVersion, "stakes": HeaderStakes,
	"residency": HeaderResidency, "max_cost_usd": HeaderMaxCostUSD, "idempotency_key": HeaderIdempotencyKey,
	"timeout_ms": HeaderTimeoutMS,
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// applyHeaders fills the envelope's Switchyard fields from the headers
// (and metadata already decoded into req.Metadata for OpenAI).
func applyHeaders(h http.Header, req *envelope.Request, defTimeout time.Duration) *apiError {
	get := func(header string) string {
		if v := strings.TrimSpace(h.Get(header)); v != "" {
			return v
		}
		for k, hd := range metaFields {
			if hd == header {
				if v, ok := req.Metadata[k]; ok {
					delete(req.Metadata, k)
					return v
				}
			}
		}
		return ""
	}
	bad := func(field, msg string) *apiError {
		return &apiError{Status: http.StatusBadRequest, Code: envelope.CodeInvalidRequest, Message: field + ": " + msg}
	}
	req.EndpointTag = get(HeaderEndpointTag)
	req.PromptVersion = get(HeaderPromptVersion)
	pol := envelope.RequestPolicy{Stakes: get(HeaderStakes), Residency: get(HeaderResidency)}
	if v := get(HeaderMaxCostUSD); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return bad(HeaderMaxCostUSD, fmt.Sprintf("%q is not a positive number of USD", v))
		}
		pol.MaxCostUSD = f
	}
	if pol != (envelope.RequestPolicy{}) {
		req.Policy = &pol
	}
	req.TimeoutMS = int(defTimeout / time.Millisecond)
	if v := get(HeaderTimeoutMS); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 600000 {
			return bad(HeaderTimeoutMS, fmt.Sprintf("%q is not a whole number of milliseconds in 1…600000", v))
		}
		req.TimeoutMS = n
	}
	if v := get(HeaderIdempotencyKey); v != "" {
		if !idRE.MatchString(v) {
			return bad(HeaderIdempotencyKey, "must be 1 to 128 characters of [A-Za-z0-9_-]")
		}
		req.ID = v
		if req.Metadata == nil {
			req.Metadata = map[string]string{}
		}
		req.Metadata[metaIdempotent] = "true"
	}
	if len(req.Metadata) == 0 {
		req.Metadata = nil
	}
	return nil
}

// Model names the edge understands besides routes and catalog models.
const (
	ModelAuto   = "auto"
	routePrefix = "route:"
)

// resolveModel turns the API's `model` into the envelope's route or pinned
// model: `auto` (the router's match rules pick the route), `route:<name>`
// or `<name>` (a route), `<vendor>/<model>` (one catalog model). A key
// with a route allow-list may use only those routes by name.
func resolveModel(p *policy.Policy, key *apikey.Record, req *envelope.Request) *apiError {
	model := strings.TrimSpace(req.Model)
	req.Model = ""
	restricted := func() *apiError {
		return &apiError{Status: http.StatusForbidden, Code: envelope.CodePolicyBlocked,
			Message: fmt.Sprintf("model %q: this API key may only use the routes %s", model, strings.Join(key.Routes, ", "))}
	}
	switch {
	case model == "":
		return &apiError{Status: http.StatusBadRequest, Code: envelope.CodeInvalidRequest, Message: "model: required (a route, a catalog model such as openai/gpt-4o, or auto)"}
	case model == ModelAuto:
		if len(key.Routes) > 0 {
			return restricted()
		}
		return nil
	case strings.Contains(model, "/") && !strings.HasPrefix(model, routePrefix):
		vendor, name, _ := strings.Cut(model, "/")
		if _, ok := p.Model(vendor, name); !ok {
			return &apiError{Status: http.StatusBadRequest, Code: "model_not_found",
				Message: fmt.Sprintf("model %q is not in the catalog (GET /v1/models lists the models and routes this key may use)", model)}
		}
		if len(key.Routes) > 0 {
			return restricted()
		}
		req.Model = model
		return nil
	default:
		name := strings.TrimPrefix(model, routePrefix)
		if _, ok := p.Route(name); !ok {
			return &apiError{Status: http.StatusBadRequest, Code: envelope.CodeUnknownRoute,
				Message: fmt.Sprintf("model %q names no route of policy %s (GET /v1/models lists the models and routes this key may use)", model, p.Version)}
		}
		if !key.AllowsRoute(name) {
			return restricted()
		}
		req.Route = name
		return nil
	}
}

// replyStatus is the HTTP status of a failed reply's code: the status an
// SDK retries correctly (429/5xx retried, 4xx not).
func replyStatus(code string) int {
	switch code {
	case envelope.CodeInvalidRequest, envelope.CodeUnknownRoute:
		return http.StatusBadRequest
	case envelope.CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case envelope.CodePolicyBlocked:
		return http.StatusForbidden
	case envelope.CodeBudgetExceeded, envelope.CodeQuotaExceeded:
		return http.StatusTooManyRequests
	case envelope.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case envelope.CodeAllVendorsFailed, envelope.CodeQualityRejected, envelope.CodeStreamInterrupted:
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

// replyError maps a failed reply. Budgets and quotas are per UTC day and
// month: retry-after is the time to the next UTC day.
func replyError(rep *envelope.Reply, now time.Time) *apiError {
	e := &apiError{Code: envelope.CodeInternal, Message: "the request failed"}
	if rep.Error != nil {
		e.Code, e.Message = rep.Error.Code, rep.Error.Message
	}
	e.Status = replyStatus(e.Code)
	if e.Status == http.StatusTooManyRequests {
		now = now.UTC()
		next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
		e.RetryAfter = max(int(next.Sub(now).Seconds()), 1)
	}
	return e
}

// textContent reads a message content that is either a string or a list
// of text blocks ({"type":"text","text":…}); other block types are refused.
func textContent(raw []byte, field string) (string, *apiError) {
	var s string
	if err := unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := unmarshal(raw, &blocks); err != nil {
		return "", invalid(field + ": must be a string or a list of text blocks")
	}
	var b strings.Builder
	for i, bl := range blocks {
		if bl.Type != "text" {
			return "", invalid(fmt.Sprintf("%s[%d].type: %q is not supported (text only)", field, i, bl.Type))
		}
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(bl.Text)
	}
	return b.String(), nil
}

func invalid(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: envelope.CodeInvalidRequest, Message: msg}
}

func readAll(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) }
