package anthropic

import (
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/vendortest"
)

func ev(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

var (
	evStart      = ev("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-haiku-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"output_tokens":1}}}`)
	evBlockStart = ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	evPing       = ev("ping", `{"type": "ping"}`)
	evHello      = ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`)
	evWorld      = ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}`)
	evBlockStop  = ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
	evDelta      = ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}`)
	evStop       = ev("message_stop", `{"type":"message_stop"}`)
)

var streamFixtures = []vendortest.StreamFixture{
	vendortest.Decodes("complete", evStart+evBlockStart+evPing+evHello+evWorld+evBlockStop+evDelta+evStop, "Hello world", "stop", 25, 3),
	vendortest.Decodes("crlf", strings.ReplaceAll(evStart+evBlockStart+evHello+evBlockStop+evDelta+evStop, "\n", "\r\n"), "Hello", "stop", 25, 3),
	vendortest.Decodes("thinking block ignored", evStart+ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}`)+evHello+evDelta+evStop, "Hello", "stop", 25, 3),
	vendortest.Decodes("max tokens", evStart+evHello+ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":1}}`)+evStop, "Hello", "length", 25, 1),
	vendortest.Decodes("no message_stop, complete otherwise", evStart+evHello+evBlockStop+evDelta, "Hello", "stop", 25, 3),
	vendortest.Fails("cut before message_delta", evStart+evBlockStart+evHello, provider.ClassStreamCut),
	vendortest.Fails("empty body", "", provider.ClassStreamCut),
	vendortest.Fails("malformed event", evStart+"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"tr\n\n"+evDelta+evStop, provider.ClassBadResponse),
	vendortest.Fails("overloaded error event", evStart+evHello+ev("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`), provider.ClassOverloaded),
	vendortest.Fails("api error event", evStart+ev("error", `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`), provider.ClassServerError),
	vendortest.Fails("refusal", evStart+evHello+ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"refusal"},"usage":{"output_tokens":1}}`)+evStop, provider.ClassContentRefused),
}

func TestStreamDecoder(t *testing.T) {
	vendortest.RunStreamFixtures(t, streamFixtures, func() provider.StreamDecoder { return &StreamDecoder{} })
}

func FuzzStreamDecoder(f *testing.F) {
	vendortest.FuzzStreamDecoder(f, streamFixtures, func() provider.StreamDecoder { return &StreamDecoder{} })
}
