package openai

import (
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/vendortest"
)

const (
	chunkRole  = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
	chunkHello = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
	chunkWorld = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
	chunkStop  = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n"
	chunkUsage = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}}` + "\n\n"
	chunkDone  = "data: [DONE]\n\n"
)

var streamFixtures = []vendortest.StreamFixture{
	vendortest.Decodes("complete", chunkRole+chunkHello+chunkWorld+chunkStop+chunkUsage+chunkDone, "Hello world", "stop", 9, 2),
	vendortest.Decodes("openrouter comments crlf and cost", strings.ReplaceAll(": OPENROUTER PROCESSING\n\n"+chunkHello+": OPENROUTER PROCESSING\n\n"+chunkStop+
		`data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"cost":0.0001}}`+"\n\n"+chunkDone, "\n", "\r\n"), "Hello", "stop", 9, 1),
	vendortest.Decodes("multi-line data", "data: {\"choices\":[{\"index\":0,\n"+`data: "delta":{"content":"Hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`+"\n\n"+chunkDone, "Hi", "length", 1, 1),
	vendortest.Decodes("no [DONE], complete otherwise", chunkHello+chunkStop+chunkUsage, "Hello", "stop", 9, 2),
	vendortest.Fails("no [DONE], no usage", chunkHello+chunkStop, provider.ClassStreamCut),
	vendortest.Fails("no finish reason", chunkRole+chunkHello, provider.ClassStreamCut),
	vendortest.Fails("cut mid-chunk", chunkHello+chunkWorld[:40], provider.ClassStreamCut),
	vendortest.Fails("malformed chunk", chunkHello+"data: {\"choices\":[{\"delta\":{\"content\":\"trunc\n\n"+chunkStop+chunkUsage+chunkDone, provider.ClassBadResponse),
	vendortest.Fails("content filter", chunkHello+`data: {"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}`+"\n\n"+chunkUsage+chunkDone, provider.ClassContentRefused),
	vendortest.Fails("refusal delta", chunkRole+`data: {"choices":[{"index":0,"delta":{"refusal":"I can't help with that."},"finish_reason":null}]}`+"\n\n"+chunkStop+chunkUsage+chunkDone, provider.ClassContentRefused),
	vendortest.Fails("openai error chunk", chunkHello+`data: {"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`+"\n\n", provider.ClassServerError),
	vendortest.Fails("openrouter error with status code", chunkHello+`data: {"object":"chat.completion.chunk","error":{"code":429,"message":"Rate limit exceeded upstream"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`+"\n\n", provider.ClassRateLimited),
	vendortest.Fails("openrouter finish error", chunkHello+`data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`+"\n\n", provider.ClassServerError),
	vendortest.Fails("vllm error object", chunkHello+`data: {"object":"error","message":"engine dead","type":"InternalServerError","code":500}`+"\n\n", provider.ClassServerError),
	vendortest.Fails("huge line", chunkHello+"data: "+strings.Repeat("x", provider.MaxSSELine+10)+"\n\n", provider.ClassBadResponse),
}

func TestStreamDecoder(t *testing.T) {
	vendortest.RunStreamFixtures(t, streamFixtures, func() provider.StreamDecoder { return &StreamDecoder{} })
}

func FuzzStreamDecoder(f *testing.F) {
	vendortest.FuzzStreamDecoder(f, streamFixtures, func() provider.StreamDecoder { return &StreamDecoder{} })
}
