package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Control drives a running simulator's control endpoint from another
// process. BaseURL is the simulator root, e.g. http://127.0.0.1:8089.
type Control struct {
	BaseURL    string
	HTTPClient *http.Client
}

// Scenario fetches the running scenario.
func (c Control) Scenario(ctx context.Context) (Scenario, error) {
	var sc Scenario
	err := c.do(ctx, http.MethodGet, "/_sim/scenario", nil, &sc)
	return sc, err
}

// SetScenario replaces the scenario.
func (c Control) SetScenario(ctx context.Context, sc Scenario) error {
	body, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPut, "/_sim/scenario", body, nil)
}

// Patch merges patch into the scenario (RFC 7386 JSON merge patch). patch is
// a Scenario (unset fields are left alone), raw JSON ([]byte or
// json.RawMessage), or anything that marshals to a JSON object.
func (c Control) Patch(ctx context.Context, patch any) error {
	var body []byte
	switch p := patch.(type) {
	case []byte:
		body = p
	case json.RawMessage:
		body = p
	case string:
		body = []byte(p)
	default:
		b, err := json.Marshal(patch)
		if err != nil {
			return err
		}
		body = b
	}
	return c.do(ctx, http.MethodPatch, "/_sim/scenario", body, nil)
}

// Calls fetches the call counts.
func (c Control) Calls(ctx context.Context) (Calls, error) {
	var calls Calls
	err := c.do(ctx, http.MethodGet, "/_sim/calls", nil, &calls)
	return calls, err
}

// Reset clears the call counts and rate-limit windows.
func (c Control) Reset(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/_sim/reset", nil, nil)
}

func (c Control) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := c.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("sim control %s %s: %d: %s", method, path, resp.StatusCode, e.Error)
		}
		return fmt.Errorf("sim control %s %s: %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
