package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type protocol int

const (
	protoOpenAI protocol = iota
	protoOpenRouter
	protoAnthropic
	protoGemini
)

// request is a parsed completion request, vendor-neutral.
type request struct {
	proto     protocol
	vendor    string
	model     string
	id        uint64
	prompt    string // every message's text, in order, for hashing and markers
	maxTokens int    // 0: unbounded
	wantJSON  bool
	schema    []byte
	// usageInclude: an OpenRouter request asked for usage accounting, so
	// the reply carries usage.cost.
	usageInclude bool
	// stream: the answer goes out as an event stream; streamUsage: an
	// OpenAI stream asked for its final usage chunk
	// (stream_options.include_usage).
	stream      bool
	streamUsage bool
	// prefill: the last turn is the assistant's, to be continued.
	prefill bool
}

// apiError is a failure to render in the vendor's error format.
type apiError struct {
	status     int
	msg        string // empty: the vendor's stock message for status
	param      string // OpenAI param
	code       string // OpenAI code / Anthropic error type / Google status override
	typ        string // OpenAI error type override
	retryAfter int    // seconds; -1 none
	limit      *limitState
}

func badRequest(msg string) *apiError { return &apiError{status: 400, msg: msg, retryAfter: -1} }

// ---- authentication ----

func authenticate(r *http.Request, p protocol) *apiError {
	switch p {
	case protoOpenAI:
		if bearer(r) == "" {
			return &apiError{status: 401, retryAfter: -1, msg: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys."}
		}
	case protoOpenRouter:
		if bearer(r) == "" {
			return &apiError{status: 401, retryAfter: -1, msg: "No auth credentials found"}
		}
	case protoAnthropic:
		if r.Header.Get("x-api-key") == "" && bearer(r) == "" {
			return &apiError{status: 401, retryAfter: -1, msg: "x-api-key header is required"}
		}
		if r.Header.Get("anthropic-version") == "" {
			return &apiError{status: 400, retryAfter: -1, msg: "anthropic-version: header is required"}
		}
	case protoGemini:
		if r.Header.Get("x-goog-api-key") == "" && r.URL.Query().Get("key") == "" && bearer(r) == "" {
			// What the real API answers: 403, not 401.
			return &apiError{status: 403, retryAfter: -1, msg: "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."}
		}
	}
	return nil
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// ---- parsing ----

func parse(r *http.Request, req *request, body []byte) *apiError {
	switch req.proto {
	case protoAnthropic:
		return parseAnthropic(req, body)
	case protoGemini:
		return parseGemini(req, body)
	default:
		return parseOpenAI(req, body)
	}
}

// contentText extracts the text of a content value: a string, or a list of parts
// with "text" fields.
func contentText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", false
	}
	var sb strings.Builder
	for _, p := range parts {
		sb.WriteString(p.Text)
	}
	return sb.String(), true
}

func checkSchema(schema []byte) bool {
	v, err := decodeOrdered(schema)
	if err != nil {
		return false
	}
	_, ok := v.(*object)
	return ok
}

type openaiRequest struct {
	Model               *string          `json:"model"`
	Messages            *json.RawMessage `json:"messages"`
	MaxTokens           *int             `json:"max_tokens"`
	MaxCompletionTokens *int             `json:"max_completion_tokens"`
	Temperature         *float64         `json:"temperature"`
	Stream              bool             `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
	// Usage is OpenRouter's usage-accounting switch.
	Usage *struct {
		Include bool `json:"include"`
	} `json:"usage"`
}

func parseOpenAI(req *request, body []byte) *apiError {
	var b openaiRequest
	if err := json.Unmarshal(body, &b); err != nil {
		if req.proto == protoOpenRouter {
			return badRequest("Invalid JSON in request body")
		}
		return badRequest("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
	}
	if b.Model == nil || *b.Model == "" {
		return badRequest("you must provide a model parameter")
	}
	req.model = *b.Model
	req.usageInclude = b.Usage != nil && b.Usage.Include
	if b.Messages == nil {
		e := badRequest("Missing required parameter: 'messages'.")
		e.param, e.code = "messages", "missing_required_parameter"
		return e
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(*b.Messages, &msgs); err != nil {
		e := badRequest("Invalid type for 'messages': expected an array of objects.")
		e.param, e.code = "messages", "invalid_type"
		return e
	}
	if len(msgs) == 0 {
		e := badRequest("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
		e.param, e.code = "messages", "empty_array"
		return e
	}
	var sb strings.Builder
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "developer", "tool", "function":
		default:
			e := badRequest(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", m.Role))
			e.param, e.code = fmt.Sprintf("messages[%d].role", i), "invalid_value"
			return e
		}
		t, ok := contentText(m.Content)
		if !ok {
			e := badRequest(fmt.Sprintf("Invalid type for 'messages[%d].content': expected one of a string or array of objects.", i))
			e.param, e.code = fmt.Sprintf("messages[%d].content", i), "invalid_type"
			return e
		}
		sb.WriteString(t)
		sb.WriteByte('\n')
	}
	req.prompt = sb.String()
	if b.Temperature != nil && (*b.Temperature < 0 || *b.Temperature > 2) {
		e := badRequest(fmt.Sprintf("Invalid 'temperature': expected a value between 0 and 2, but got %v instead.", *b.Temperature))
		e.param, e.code = "temperature", "invalid_value"
		return e
	}
	for _, mt := range []struct {
		name string
		v    *int
	}{{"max_tokens", b.MaxTokens}, {"max_completion_tokens", b.MaxCompletionTokens}} {
		if mt.v == nil {
			continue
		}
		if *mt.v < 1 {
			e := badRequest(fmt.Sprintf("Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", mt.name, *mt.v))
			e.param, e.code = mt.name, "integer_below_min_value"
			return e
		}
		req.maxTokens = *mt.v
	}
	req.stream = b.Stream
	req.streamUsage = b.StreamOptions != nil && b.StreamOptions.IncludeUsage
	if b.StreamOptions != nil && !b.Stream {
		e := badRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		e.param, e.code = "stream_options", "invalid_value"
		return e
	}
	req.prefill = msgs[len(msgs)-1].Role == "assistant"
	if rf := b.ResponseFormat; rf != nil {
		switch rf.Type {
		case "text", "":
		case "json_object":
			if !strings.Contains(strings.ToLower(req.prompt), "json") {
				e := badRequest("'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.")
				e.param = "messages"
				return e
			}
			req.wantJSON = true
		case "json_schema":
			if rf.JSONSchema == nil {
				e := badRequest("Missing required parameter: 'response_format.json_schema'.")
				e.param, e.code = "response_format.json_schema", "missing_required_parameter"
				return e
			}
			if rf.JSONSchema.Name == "" {
				e := badRequest("Missing required parameter: 'response_format.json_schema.name'.")
				e.param, e.code = "response_format.json_schema.name", "missing_required_parameter"
				return e
			}
			req.wantJSON = true
			if s := bytes.TrimSpace(rf.JSONSchema.Schema); len(s) > 0 {
				if !checkSchema(s) {
					e := badRequest(fmt.Sprintf("Invalid schema for response_format '%s': schema must be a JSON Schema of 'type: \"object\"'.", rf.JSONSchema.Name))
					e.param, e.code = "response_format", "invalid_value"
					return e
				}
				req.schema = s
			}
		default:
			e := badRequest(fmt.Sprintf("Invalid value: '%s'. Supported values are: 'json_object', 'json_schema', and 'text'.", rf.Type))
			e.param, e.code = "response_format.type", "invalid_value"
			return e
		}
	}
	return nil
}

type anthropicRequest struct {
	Model        *string          `json:"model"`
	MaxTokens    *int             `json:"max_tokens"`
	Messages     *json.RawMessage `json:"messages"`
	System       json.RawMessage  `json:"system"`
	Temperature  *float64         `json:"temperature"`
	Stream       bool             `json:"stream"`
	OutputFormat *struct {
		Type   string          `json:"type"`
		Schema json.RawMessage `json:"schema"`
	} `json:"output_format"`
}

func parseAnthropic(req *request, body []byte) *apiError {
	var b anthropicRequest
	if err := json.Unmarshal(body, &b); err != nil {
		return badRequest("There was an issue with your request body: invalid JSON")
	}
	if b.Model == nil || *b.Model == "" {
		return badRequest("model: Field required")
	}
	req.model = *b.Model
	if b.MaxTokens == nil {
		return badRequest("max_tokens: Field required")
	}
	if *b.MaxTokens < 1 {
		return badRequest("max_tokens: Input should be greater than or equal to 1")
	}
	req.maxTokens = *b.MaxTokens
	if b.Messages == nil {
		return badRequest("messages: Field required")
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(*b.Messages, &msgs); err != nil {
		return badRequest("messages: Input should be a valid list")
	}
	if len(msgs) == 0 {
		return badRequest("messages: at least one message is required")
	}
	system, ok := contentText(b.System)
	if !ok {
		return badRequest("system: Input should be a valid string or a list of text blocks")
	}
	var sb strings.Builder
	sb.WriteString(system)
	sb.WriteByte('\n')
	for i, m := range msgs {
		switch m.Role {
		case "user", "assistant":
		case "system":
			return badRequest(`messages: Unexpected role "system". The Messages API accepts a top-level ` + "`system`" + ` parameter, not "system" as an input message role.`)
		default:
			return badRequest(fmt.Sprintf("messages.%d.role: Input should be 'user' or 'assistant'", i))
		}
		t, ok := contentText(m.Content)
		if !ok {
			return badRequest(fmt.Sprintf("messages.%d.content: Input should be a valid string or a list of content blocks", i))
		}
		sb.WriteString(t)
		sb.WriteByte('\n')
	}
	req.prompt = sb.String()
	if b.Temperature != nil && (*b.Temperature < 0 || *b.Temperature > 1) {
		return badRequest("temperature: Input should be less than or equal to 1")
	}
	req.stream = b.Stream
	req.prefill = msgs[len(msgs)-1].Role == "assistant"
	if of := b.OutputFormat; of != nil && of.Type == "json_schema" {
		req.wantJSON = true
		if s := bytes.TrimSpace(of.Schema); len(s) > 0 {
			if !checkSchema(s) {
				return badRequest("output_format.schema: Input should be a valid JSON Schema object")
			}
			req.schema = s
		}
	} else if strings.Contains(system, "JSON") {
		// The classic API has no response format: JSON is asked for in the
		// system prompt, with the schema spelled out there.
		req.wantJSON = true
		req.schema = findSchema(system)
	}
	return nil
}

type geminiContent struct {
	Role  string `json:"role"`
	Parts []struct {
		Text *string `json:"text"`
	} `json:"parts"`
}

type geminiRequest struct {
	Contents          *json.RawMessage `json:"contents"`
	SystemInstruction *geminiContent   `json:"systemInstruction"`
	SystemSnake       *geminiContent   `json:"system_instruction"`
	GenerationConfig  *geminiGenConfig `json:"generationConfig"`
	GenConfigSnake    *geminiGenConfig `json:"generation_config"`
}

type geminiGenConfig struct {
	MaxOutputTokens    *int            `json:"maxOutputTokens"`
	MaxOutputSnake     *int            `json:"max_output_tokens"`
	Temperature        *float64        `json:"temperature"`
	ResponseMimeType   string          `json:"responseMimeType"`
	MimeSnake          string          `json:"response_mime_type"`
	ResponseSchema     json.RawMessage `json:"responseSchema"`
	SchemaSnake        json.RawMessage `json:"response_schema"`
	ResponseJSONSchema json.RawMessage `json:"responseJsonSchema"`
	JSONSchemaSnake    json.RawMessage `json:"response_json_schema"`
}

func firstRaw(vs ...json.RawMessage) []byte {
	for _, v := range vs {
		if t := bytes.TrimSpace(v); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
			return t
		}
	}
	return nil
}

func parseGemini(req *request, body []byte) *apiError {
	if req.model == "" || strings.ContainsAny(req.model, "/ ") {
		return badRequest("* GenerateContentRequest.model: unexpected model name format\n")
	}
	var b geminiRequest
	if err := json.Unmarshal(body, &b); err != nil {
		return badRequest("Invalid JSON payload received. " + err.Error())
	}
	if b.Contents == nil {
		return badRequest("* GenerateContentRequest.contents: contents is not specified\n")
	}
	var contents []geminiContent
	if err := json.Unmarshal(*b.Contents, &contents); err != nil {
		return badRequest("Invalid JSON payload received. Invalid value at 'contents'.")
	}
	if len(contents) == 0 {
		return badRequest("* GenerateContentRequest.contents: contents is not specified\n")
	}
	var sb strings.Builder
	sys := b.SystemInstruction
	if sys == nil {
		sys = b.SystemSnake
	}
	if sys != nil {
		for _, p := range sys.Parts {
			if p.Text != nil {
				sb.WriteString(*p.Text)
			}
		}
		sb.WriteByte('\n')
	}
	for i, c := range contents {
		switch c.Role {
		case "", "user", "model":
		default:
			return badRequest("Please use a valid role: user, model.")
		}
		if len(c.Parts) == 0 {
			return badRequest(fmt.Sprintf("* GenerateContentRequest.contents[%d].parts: contents.parts must not be empty.\n", i))
		}
		for _, p := range c.Parts {
			if p.Text != nil {
				sb.WriteString(*p.Text)
			}
		}
		sb.WriteByte('\n')
	}
	req.prompt = sb.String()
	req.prefill = contents[len(contents)-1].Role == "model"
	gc := b.GenerationConfig
	if gc == nil {
		gc = b.GenConfigSnake
	}
	if gc != nil {
		mt := gc.MaxOutputTokens
		if mt == nil {
			mt = gc.MaxOutputSnake
		}
		if mt != nil {
			if *mt < 1 {
				return badRequest("* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be positive.\n")
			}
			req.maxTokens = *mt
		}
		if gc.Temperature != nil && (*gc.Temperature < 0 || *gc.Temperature > 2) {
			return badRequest("* GenerateContentRequest.generation_config.temperature: temperature must be between 0 and 2.\n")
		}
		mime := gc.ResponseMimeType
		if mime == "" {
			mime = gc.MimeSnake
		}
		schema := firstRaw(gc.ResponseJSONSchema, gc.JSONSchemaSnake, gc.ResponseSchema, gc.SchemaSnake)
		if schema != nil && mime != "application/json" {
			return badRequest("* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be application/json when a response schema is set.\n")
		}
		if mime == "application/json" {
			req.wantJSON = true
			if schema != nil {
				if !checkSchema(schema) {
					return badRequest("* GenerateContentRequest.generation_config.response_schema: invalid schema.\n")
				}
				req.schema = schema
			}
		}
	}
	return nil
}

// ---- generation ----

type generation struct {
	content         string
	length          bool
	in, out, cached int
	reasoning       int // thinking tokens, billed as output on top of out
}

// billedOut is every output token the vendor bills: the answer and the
// thinking.
func (g generation) billedOut() int { return g.out + g.reasoning }

func generate(req *request, mk markers, beh *resolved) generation {
	h := fnv64a(req.prompt)
	g := generation{in: max(tokens(req.prompt), 1), reasoning: beh.reasoning}
	g.cached = int(float64(g.in) * beh.cachedRatio)
	switch {
	case mk.empty:
	case req.wantJSON:
		var doc []byte
		if req.schema != nil {
			doc, _ = Instance(req.schema, h)
		}
		if doc == nil {
			doc, _ = json.Marshal(map[string]string{"answer": text(h)})
		}
		invalid := mk.invalidJSON || (beh.invalidJSONRate > 0 && unit(fnv64a(req.prompt, "invalid_json")) < beh.invalidJSONRate)
		mismatch := req.schema != nil && (mk.mismatch || (beh.mismatchRate > 0 && unit(fnv64a(req.prompt, "mismatch")) < beh.mismatchRate))
		switch {
		case invalid:
			doc = doc[:max(len(doc)/2, 1)]
			if json.Valid(doc) {
				doc = append(doc, ',')
			}
		case mismatch:
			if bytes.HasPrefix(bytes.TrimSpace(doc), []byte("{")) {
				doc = []byte(`["this","is","not","the","requested","object"]`)
			} else {
				doc = []byte(`{"unexpected":true}`)
			}
		}
		g.content = string(doc)
	default:
		g.content = text(h)
	}
	if req.maxTokens > 0 && tokens(g.content) > req.maxTokens {
		g.content = truncateTokens(g.content, req.maxTokens)
		g.length = true
	} else if mk.length && g.content != "" {
		g.content = truncateTokens(g.content, max(tokens(g.content)/2, 1))
		g.length = true
	}
	g.out = tokens(g.content)
	return g
}

// ---- responses ----

func writeOK(w http.ResponseWriter, req *request, g generation, price Price) {
	created := time.Now().Unix()
	id := fmt.Sprintf("%016x%06x", fnv64a(req.prompt), req.id&0xffffff)
	switch req.proto {
	case protoOpenAI, protoOpenRouter:
		finish := "stop"
		if g.length {
			finish = "length"
		}
		// Reasoning tokens are inside completion_tokens.
		usage := map[string]any{
			"prompt_tokens":             g.in,
			"completion_tokens":         g.billedOut(),
			"total_tokens":              g.in + g.billedOut(),
			"prompt_tokens_details":     map[string]int{"cached_tokens": g.cached, "audio_tokens": 0},
			"completion_tokens_details": map[string]int{"reasoning_tokens": g.reasoning, "audio_tokens": 0},
		}
		choice := map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": g.content, "refusal": nil},
			"logprobs":      nil,
			"finish_reason": finish,
		}
		resp := map[string]any{
			"object":  "chat.completion",
			"created": created,
			"model":   req.model,
			"choices": []any{choice},
			"usage":   usage,
		}
		if req.proto == protoOpenRouter {
			if req.usageInclude {
				usage["cost"] = price.Cost(g.in, g.billedOut())
			}
			resp["id"] = "gen-" + id
			resp["provider"] = "Simulated"
			choice["native_finish_reason"] = finish
		} else {
			resp["id"] = "chatcmpl-" + id
			resp["system_fingerprint"] = "fp_sim"
			resp["service_tier"] = "default"
			w.Header().Set("x-request-id", "req_"+id)
		}
		writeJSON(w, 200, resp)
	case protoAnthropic:
		stop := "end_turn"
		if g.length {
			stop = "max_tokens"
		}
		content := []any{}
		if g.content != "" {
			content = append(content, map[string]string{"type": "text", "text": g.content})
		}
		w.Header().Set("request-id", "req_"+id)
		writeJSON(w, 200, map[string]any{
			"id":            "msg_" + id,
			"type":          "message",
			"role":          "assistant",
			"model":         req.model,
			"content":       content,
			"stop_reason":   stop,
			"stop_sequence": nil,
			"usage": map[string]any{
				"input_tokens":                g.in - g.cached,
				"cache_creation_input_tokens": 0,
				"cache_read_input_tokens":     g.cached,
				"output_tokens":               g.billedOut(), // thinking included, not broken out
			},
		})
	case protoGemini:
		finish := "STOP"
		if g.length {
			finish = "MAX_TOKENS"
		}
		content := map[string]any{"role": "model"}
		if g.content != "" {
			content["parts"] = []any{map[string]string{"text": g.content}}
		}
		// Thoughts are billed as output but not counted in candidates.
		usage := map[string]any{
			"promptTokenCount":     g.in,
			"candidatesTokenCount": g.out,
			"totalTokenCount":      g.in + g.billedOut(),
			"promptTokensDetails":  []any{map[string]any{"modality": "TEXT", "tokenCount": g.in}},
		}
		if g.cached > 0 {
			usage["cachedContentTokenCount"] = g.cached
		}
		if g.reasoning > 0 {
			usage["thoughtsTokenCount"] = g.reasoning
		}
		writeJSON(w, 200, map[string]any{
			"candidates":    []any{map[string]any{"content": content, "finishReason": finish, "index": 0}},
			"usageMetadata": usage,
			"modelVersion":  req.model,
			"responseId":    id,
		})
	}
}

var anthropicTypes = map[int]string{
	400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
	403: "permission_error", 404: "not_found_error", 413: "request_too_large",
	429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}

var anthropicMessages = map[int]string{
	401: "invalid x-api-key", 403: "Your API key does not have permission to use the specified resource.",
	404: "The requested resource could not be found.", 413: "Request exceeds the maximum allowed number of bytes.",
	429: "This request would exceed the rate limit for your organization. Please reduce the prompt length or the maximum tokens requested, or try again later.",
	500: "Internal server error", 504: "Request timed out", 529: "Overloaded",
}

var googleStatus = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
	501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}

var googleMessages = map[int]string{
	401: "Request had invalid authentication credentials.",
	403: "The caller does not have permission",
	404: "models/unknown is not found for API version v1beta, or is not supported for generateContent.",
	429: "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
	500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
	503: "The model is overloaded. Please try again later.",
	504: "The request timed out. Please try again.",
}

func openaiStock(status int, req *request) (msg, typ, code string) {
	switch status {
	case 400:
		return "Invalid request.", "invalid_request_error", ""
	case 401:
		return "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"
	case 403:
		return "You are not allowed to sample from this model.", "invalid_request_error", "model_not_found"
	case 404:
		return fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", req.model), "invalid_request_error", "model_not_found"
	case 429:
		return fmt.Sprintf("Rate limit reached for %s in organization org-sim on requests per min (RPM). Please try again later.", req.model), "requests", "rate_limit_exceeded"
	case 500:
		return "The server had an error while processing your request. Sorry about that!", "server_error", ""
	case 502:
		return "Bad gateway.", "server_error", ""
	case 503:
		return "The server is overloaded or not ready yet.", "server_error", ""
	}
	return statusText(status), "server_error", ""
}

func statusText(status int) string {
	if status == 529 {
		return "Overloaded"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "HTTP " + strconv.Itoa(status)
}

func writeError(w http.ResponseWriter, req *request, e apiError) {
	h := w.Header()
	if e.retryAfter >= 0 && req.proto != protoGemini {
		h.Set("retry-after", strconv.Itoa(e.retryAfter))
	}
	switch req.proto {
	case protoOpenAI:
		msg, typ, code := openaiStock(e.status, req)
		if e.status < 500 && e.status != 429 {
			typ = "invalid_request_error"
		}
		if e.status == 429 && e.limit != nil {
			unit, limit, used := "requests per min (RPM)", e.limit.rpm, e.limit.rpm-e.limit.remainingReq
			if e.limit.limitedByTokens {
				unit, limit, used, typ = "tokens per min (TPM)", e.limit.tpm, e.limit.usedTo, "tokens"
			}
			msg = fmt.Sprintf("Rate limit reached for %s in organization org-sim on %s: Limit %d, Used %d, Requested %d. Please try again in %ds.",
				req.model, unit, limit, used, max(e.limit.requestedTok*boolInt(e.limit.limitedByTokens), 1), max(e.retryAfter, 1))
		}
		if e.msg != "" {
			msg, code = e.msg, e.code
		}
		if e.typ != "" {
			typ = e.typ
		}
		body := map[string]any{"message": msg, "type": typ, "param": nilIfEmpty(e.param), "code": nilIfEmpty(code)}
		writeJSON(w, e.status, map[string]any{"error": body})
	case protoOpenRouter:
		msg, _, _ := openaiStock(e.status, req)
		switch e.status {
		case 401:
			msg = "User not found."
		case 429:
			msg = "Rate limit exceeded: " + req.model
		case 502, 503:
			msg = "Provider returned error"
		}
		if e.msg != "" {
			msg = e.msg
		}
		writeJSON(w, e.status, map[string]any{"error": map[string]any{"message": msg, "code": e.status}})
	case protoAnthropic:
		typ := anthropicTypes[e.status]
		if e.code != "" {
			typ = e.code
		}
		if typ == "" {
			typ = "api_error"
			if e.status < 500 {
				typ = "invalid_request_error"
			}
		}
		msg := e.msg
		if msg == "" {
			msg = anthropicMessages[e.status]
		}
		if msg == "" {
			msg = statusText(e.status)
		}
		h.Set("request-id", fmt.Sprintf("req_sim%012x", req.id))
		writeJSON(w, e.status, map[string]any{
			"type":       "error",
			"error":      map[string]string{"type": typ, "message": msg},
			"request_id": fmt.Sprintf("req_sim%012x", req.id),
		})
	case protoGemini:
		st := googleStatus[e.status]
		if e.code != "" {
			st = e.code
		}
		if st == "" {
			st = "UNKNOWN"
			if e.status == 529 {
				st = "UNAVAILABLE"
			}
		}
		msg := e.msg
		if msg == "" {
			msg = googleMessages[e.status]
		}
		if msg == "" {
			msg = statusText(e.status)
		}
		errBody := map[string]any{"code": e.status, "message": msg, "status": st}
		var details []any
		if e.status == 429 {
			details = append(details,
				map[string]any{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]any{
					"quotaMetric":     "generativelanguage.googleapis.com/generate_content_requests",
					"quotaId":         "GenerateRequestsPerMinutePerProjectPerModel",
					"quotaDimensions": map[string]string{"location": "global", "model": req.model},
				}}},
				map[string]any{"@type": "type.googleapis.com/google.rpc.Help", "links": []any{map[string]string{
					"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}}},
			)
		}
		if e.retryAfter >= 0 {
			details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": strconv.Itoa(e.retryAfter) + "s"})
		}
		if details != nil {
			errBody["details"] = details
		}
		writeJSON(w, e.status, map[string]any{"error": errBody})
	}
}

// Vendor conditions a prompt marker ([[sim:error=KIND]]) or the scenario
// can ask for, each answered in the vendor's own words and status.
const (
	errContextLength = "context_length" // the prompt does not fit the context window
	errBilling       = "billing"        // the account cannot pay
)

// defaultContextWindow is the window a context_length marker reports.
const defaultContextWindow = 128000

// vendorError renders a vendor condition as that vendor does: a context
// overflow (prompt tokens, window) or an exhausted account.
func vendorError(p protocol, kind string, prompt, window int) (apiError, bool) {
	switch kind {
	case errContextLength:
		switch p {
		case protoOpenAI:
			return apiError{status: 400, retryAfter: -1, param: "messages", code: "context_length_exceeded",
				msg: fmt.Sprintf("This model's maximum context length is %d tokens. However, your messages resulted in %d tokens. Please reduce the length of the messages.", window, prompt)}, true
		case protoOpenRouter:
			return apiError{status: 400, retryAfter: -1,
				msg: fmt.Sprintf("This endpoint's maximum context length is %d tokens. However, you requested about %d tokens. Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.", window, prompt)}, true
		case protoAnthropic:
			return apiError{status: 400, retryAfter: -1, code: "invalid_request_error",
				msg: fmt.Sprintf("prompt is too long: %d tokens > %d maximum", prompt, window)}, true
		case protoGemini:
			return apiError{status: 400, retryAfter: -1, code: "INVALID_ARGUMENT",
				msg: fmt.Sprintf("The input token count (%d) exceeds the maximum number of tokens allowed (%d).", prompt, window)}, true
		}
	case errBilling:
		switch p {
		case protoOpenAI:
			return apiError{status: 429, retryAfter: -1, typ: "insufficient_quota", code: "insufficient_quota",
				msg: "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."}, true
		case protoOpenRouter:
			return apiError{status: 402, retryAfter: -1, msg: "Insufficient credits. Add more using https://openrouter.ai/credits"}, true
		case protoAnthropic:
			return apiError{status: 400, retryAfter: -1, code: "invalid_request_error",
				msg: "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}, true
		case protoGemini:
			return apiError{status: 400, retryAfter: -1, code: "FAILED_PRECONDITION",
				msg: "User location is not supported for the API use without a billing account linked."}, true
		}
	}
	return apiError{}, false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// setRateHeaders writes the vendor's rate-limit headers (only when the
// scenario sets limits; Gemini sends none).
func setRateHeaders(w http.ResponseWriter, p protocol, l *limitState, now time.Time) {
	h := w.Header()
	switch p {
	case protoOpenAI:
		if l.rpm > 0 {
			h.Set("x-ratelimit-limit-requests", strconv.Itoa(l.rpm))
			h.Set("x-ratelimit-remaining-requests", strconv.Itoa(l.remainingReq))
			h.Set("x-ratelimit-reset-requests", l.resetReq.Round(time.Millisecond).String())
		}
		if l.tpm > 0 {
			h.Set("x-ratelimit-limit-tokens", strconv.Itoa(l.tpm))
			h.Set("x-ratelimit-remaining-tokens", strconv.Itoa(l.remainingTok))
			h.Set("x-ratelimit-reset-tokens", l.resetTok.Round(time.Millisecond).String())
		}
	case protoOpenRouter:
		if l.rpm > 0 {
			h.Set("X-RateLimit-Limit", strconv.Itoa(l.rpm))
			h.Set("X-RateLimit-Remaining", strconv.Itoa(l.remainingReq))
			h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(l.resetReq).UnixMilli(), 10))
		}
	case protoAnthropic:
		if l.rpm > 0 {
			h.Set("anthropic-ratelimit-requests-limit", strconv.Itoa(l.rpm))
			h.Set("anthropic-ratelimit-requests-remaining", strconv.Itoa(l.remainingReq))
			h.Set("anthropic-ratelimit-requests-reset", now.Add(l.resetReq).UTC().Format(time.RFC3339))
		}
		if l.tpm > 0 {
			h.Set("anthropic-ratelimit-tokens-limit", strconv.Itoa(l.tpm))
			h.Set("anthropic-ratelimit-tokens-remaining", strconv.Itoa(l.remainingTok))
			h.Set("anthropic-ratelimit-tokens-reset", now.Add(l.resetTok).UTC().Format(time.RFC3339))
		}
	}
}
