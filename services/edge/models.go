package edge

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
)

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

// models lists what the key may name as `model`: auto, the routes
// (route:<name>) and the catalog models (<vendor>/<model>); a key with a
// route allow-list sees only its routes.
func (e *Edge) models(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderRequestID, newID())
	rec, err := e.d.Keys.Lookup(r.Context(), anthropic{}.key(r)) // a bearer token, or x-api-key
	if err != nil {
		status, code, msg := http.StatusInternalServerError, "internal", "the key store is unavailable"
		if errors.Is(err, apikey.ErrUnknown) {
			status, code, msg = http.StatusUnauthorized, "invalid_api_key", "missing, unknown or revoked API key"
		}
		e.requests.WithLabelValues("openai", fmt.Sprint(status)).Inc()
		e.writeError(w, openAI{}, &apiError{Status: status, Code: code, Message: msg})
		return
	}
	p := e.d.Policy.Current()
	out := modelList{Object: "list", Data: []modelInfo{}}
	add := func(id string) {
		out.Data = append(out.Data, modelInfo{ID: id, Object: "model", OwnedBy: "switchyard"})
	}
	if len(rec.Routes) == 0 {
		add(ModelAuto)
	}
	for _, rt := range p.Routes {
		if rec.AllowsRoute(rt.Name) {
			add(routePrefix + rt.Name)
		}
	}
	if len(rec.Routes) == 0 {
		for _, m := range p.Models {
			add(m.Vendor + "/" + m.Model)
		}
	}
	writeJSON(w, http.StatusOK, out)
}
