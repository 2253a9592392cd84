package edge

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// OpenAI's list: every model at once.
type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// Anthropic's list (GET /v1/models of the Models API): a page with cursors.
type antModelList struct {
	Data    []antModel `json:"data"`
	HasMore bool       `json:"has_more"`
	FirstID *string    `json:"first_id"`
	LastID  *string    `json:"last_id"`
}

type antModel struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

// isAnthropicClient tells an Anthropic SDK (it sends anthropic-version and
// x-api-key) from an OpenAI one (a bearer token).
func isAnthropicClient(r *http.Request) bool {
	return r.Header.Get("anthropic-version") != "" || r.Header.Get("x-api-key") != ""
}

// models lists what the key may name as `model`, in the format of the
// client's API: auto, the routes (route:<name>) and the catalog models
// (<vendor>/<model>); a key with a route allow-list sees only its routes.
func (e *Edge) models(w http.ResponseWriter, r *http.Request) {
	var a api = openAI{}
	if isAnthropicClient(r) {
		a = anthropic{}
	}
	w.Header().Set(HeaderRequestID, newID())
	rec, err := e.keys.Lookup(r.Context(), anthropic{}.key(r)) // a bearer token, or x-api-key
	if err != nil {
		status, code, msg := http.StatusInternalServerError, "internal", "the key store is unavailable"
		if errors.Is(err, apikey.ErrUnknown) {
			status, code, msg = http.StatusUnauthorized, "invalid_api_key", "missing, unknown or revoked API key"
		}
		e.requests.WithLabelValues(a.name(), fmt.Sprint(status)).Inc()
		e.writeError(w, a, &apiError{Status: status, Code: code, Message: msg})
		return
	}
	ids := allowedModels(e.d.Policy.Current(), rec)
	if _, ok := a.(anthropic); !ok {
		out := modelList{Object: "list", Data: make([]modelInfo, 0, len(ids))}
		for _, id := range ids {
			out.Data = append(out.Data, modelInfo{ID: id, Object: "model", OwnedBy: "switchyard"})
		}
		e.requests.WithLabelValues(a.name(), "200").Inc()
		writeJSON(w, http.StatusOK, out)
		return
	}
	page, aerr := antModelPage(ids, r)
	if aerr != nil {
		e.requests.WithLabelValues(a.name(), fmt.Sprint(aerr.Status)).Inc()
		e.writeError(w, a, aerr)
		return
	}
	e.requests.WithLabelValues(a.name(), "200").Inc()
	writeJSON(w, http.StatusOK, page)
}

// allowedModels is every name the key may send as `model`.
func allowedModels(p *policy.Policy, rec *apikey.Record) []string {
	var ids []string
	if len(rec.Routes) == 0 {
		ids = append(ids, ModelAuto)
	}
	for _, rt := range p.Routes {
		if rec.AllowsRoute(rt.Name) {
			ids = append(ids, routePrefix+rt.Name)
		}
	}
	if len(rec.Routes) == 0 {
		for _, m := range p.Models {
			ids = append(ids, m.Vendor+"/"+m.Model)
		}
	}
	return ids
}

// antModelPage cuts the list by the Models API's query parameters: limit
// (1..1000, default 20), after_id and before_id, so the SDK's paginating
// iterator walks it.
func antModelPage(ids []string, r *http.Request) (*antModelList, *apiError) {
	q := r.URL.Query()
	limit := 20
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return nil, invalid("limit: must be an integer from 1 to 1000")
		}
		limit = n
	}
	from, to := 0, len(ids)
	cursor := func(name string) (int, *apiError) {
		i := slices.Index(ids, q.Get(name))
		if i < 0 {
			return 0, invalid(fmt.Sprintf("%s: %q is not a model of this list", name, q.Get(name)))
		}
		return i, nil
	}
	switch {
	case q.Get("after_id") != "" && q.Get("before_id") != "":
		return nil, invalid("after_id and before_id: give one of them")
	case q.Get("after_id") != "":
		i, aerr := cursor("after_id")
		if aerr != nil {
			return nil, aerr
		}
		from = i + 1
		to = min(from+limit, len(ids))
	case q.Get("before_id") != "":
		i, aerr := cursor("before_id")
		if aerr != nil {
			return nil, aerr
		}
		to = i
		from = max(to-limit, 0)
	default:
		to = min(limit, len(ids))
	}
	// Switchyard's names are not dated models: created_at is a fixed epoch.
	created := time.Unix(0, 0).UTC().Format(time.RFC3339)
	out := &antModelList{Data: make([]antModel, 0, to-from)}
	for _, id := range ids[from:to] {
		out.Data = append(out.Data, antModel{Type: "model", ID: id, DisplayName: id, CreatedAt: created})
	}
	if len(out.Data) > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[len(out.Data)-1].ID
	}
	if q.Get("before_id") != "" {
		out.HasMore = from > 0
	} else {
		out.HasMore = to < len(ids)
	}
	return out, nil
}
