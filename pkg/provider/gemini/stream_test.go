package gemini

import (
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/vendortest"
)

func chunk(data string) string { return "data: " + data + "\r\n\r\n" } // Google sends CRLF

var (
	chHello = chunk(`{"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.5-flash","responseId":"r1"}`)
	chWorld = chunk(`{"candidates":[{"content":{"parts":[{"text":" world"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.5-flash","responseId":"r1"}`)
	chStop  = chunk(`{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":3,"thoughtsTokenCount":4,"totalTokenCount":16},"modelVersion":"gemini-2.5-flash","responseId":"r1"}`)
)

var streamFixtures = []vendortest.StreamFixture{
	vendortest.Decodes("complete", chHello+chWorld+chStop, "Hello world", "stop", 9, 7),
	vendortest.Decodes("finish in the last text chunk", chHello+chunk(`{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2}}`), "Hello!", "length", 9, 2),
	vendortest.Decodes("thought parts skipped", chunk(`{"candidates":[{"content":{"parts":[{"text":"pondering","thought":true}]}}]}`)+chHello+chStop, "Hello", "stop", 9, 7),
	vendortest.Fails("no finish reason", chHello+chWorld, provider.ClassStreamCut),
	vendortest.Fails("cut mid-chunk", chHello+chStop[:50], provider.ClassStreamCut),
	vendortest.Fails("malformed", chHello+"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"tr\r\n\r\n"+chStop, provider.ClassBadResponse),
	vendortest.Fails("safety stop", chHello+chunk(`{"candidates":[{"content":{"parts":[{"text":""}]},"finishReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH"}]}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1}}`), provider.ClassContentRefused),
	vendortest.Fails("blocked prompt", chunk(`{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9}}`), provider.ClassContentRefused),
	vendortest.Fails("error object", chHello+chunk(`{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`), provider.ClassOverloaded),
}

func TestStreamDecoder(t *testing.T) {
	vendortest.RunStreamFixtures(t, streamFixtures, func() provider.StreamDecoder { return &StreamDecoder{} })
}

func FuzzStreamDecoder(f *testing.F) {
	vendortest.FuzzStreamDecoder(f, streamFixtures, func() provider.StreamDecoder { return &StreamDecoder{} })
}
