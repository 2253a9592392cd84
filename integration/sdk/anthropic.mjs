// The official Anthropic SDK against the Switchyard edge: only baseURL and
// apiKey differ from a call to Anthropic. Exits non-zero on any mismatch and
// prints one JSON line of what it saw.
import Anthropic from "@anthropic-ai/sdk";

const { EDGE_URL, EDGE_KEY, EDGE_MODEL } = process.env;
const fail = (msg) => { console.error("anthropic sdk: " + msg); process.exit(1); };

const client = new Anthropic({ baseURL: EDGE_URL, apiKey: EDGE_KEY, maxRetries: 0 });
const { data: msg, response } = await client.messages
  .create({ model: EDGE_MODEL, max_tokens: 64, system: "Be brief.", messages: [{ role: "user", content: "Hello from the Anthropic SDK" }] })
  .withResponse();
const text = msg.content?.[0]?.type === "text" ? msg.content[0].text : "";
if (msg.type !== "message" || msg.role !== "assistant" || !text) fail("no answer: " + JSON.stringify(msg));
if (!(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0)) fail("usage: " + JSON.stringify(msg.usage));
if (!msg.stop_reason) fail("no stop_reason");
if (!response.headers.get("x-switchyard-request-id")) fail("no x-switchyard-request-id");

const bad = new Anthropic({ baseURL: EDGE_URL, apiKey: "sy-not-a-key", maxRetries: 0 });
let authError = "";
try {
  await bad.messages.create({ model: EDGE_MODEL, max_tokens: 8, messages: [{ role: "user", content: "hi" }] });
  fail("a bad key was accepted");
} catch (e) {
  if (!(e instanceof Anthropic.AuthenticationError) || e.status !== 401) fail("bad key: want AuthenticationError, got " + e);
  authError = e.constructor.name;
}
// Streaming: the SDK's message stream assembles the final message from
// the event sequence, usage included.
const stream = client.messages.stream({ model: EDGE_MODEL, max_tokens: 64, messages: [{ role: "user", content: "Stream to me from the Anthropic SDK" }] });
let streamText = "", chunks = 0;
stream.on("text", (t) => { streamText += t; chunks++; });
const final = await stream.finalMessage();
const finalText = final.content?.[0]?.type === "text" ? final.content[0].text : "";
if (!streamText || finalText !== streamText || final.stop_reason !== "end_turn") fail("stream: " + JSON.stringify(final) + " text " + JSON.stringify(streamText));
if (!(final.usage.input_tokens > 0 && final.usage.output_tokens > 0)) fail("stream usage: " + JSON.stringify(final.usage));
// A stream cut after deltas: the SDK raises the error event.
let cutText = "", cutError = "";
try {
  const cut = client.messages.stream({ model: EDGE_MODEL, max_tokens: 64, messages: [{ role: "user", content: "[[sim:stream=cut:2]] Tell me a long story" }] });
  cut.on("text", (t) => { cutText += t; });
  await cut.finalMessage();
  fail("a cut stream ended without an error: " + JSON.stringify(cutText));
} catch (e) {
  if (!(e instanceof Anthropic.APIError)) fail("cut stream: want an APIError, got " + e);
  cutError = e.constructor.name;
}
if (!cutText) fail("the cut stream sent no text before its error");
console.log(JSON.stringify({ model: msg.model, text, usage: msg.usage, stop_reason: msg.stop_reason, authError,
  stream: { text: streamText, usage: final.usage, chunks }, cutError }));
