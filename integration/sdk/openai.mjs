// The official OpenAI SDK against the Switchyard edge: only baseURL and
// apiKey differ from a call to OpenAI. Exits non-zero on any mismatch and
// prints one JSON line of what it saw.
import OpenAI from "openai";

const { EDGE_URL, EDGE_KEY, EDGE_MODEL } = process.env;
const fail = (msg) => { console.error("openai sdk: " + msg); process.exit(1); };

const client = new OpenAI({ baseURL: EDGE_URL + "/v1", apiKey: EDGE_KEY, maxRetries: 0 });
const { data: res, response } = await client.chat.completions
  .create({ model: EDGE_MODEL, messages: [{ role: "user", content: "Hello from the OpenAI SDK" }], max_tokens: 64 })
  .withResponse();
const text = res.choices?.[0]?.message?.content;
if (res.object !== "chat.completion" || !text) fail("no answer: " + JSON.stringify(res));
const u = res.usage;
if (!(u.prompt_tokens > 0 && u.completion_tokens > 0 && u.total_tokens === u.prompt_tokens + u.completion_tokens)) fail("usage: " + JSON.stringify(u));
if (!response.headers.get("x-switchyard-request-id")) fail("no x-switchyard-request-id");

const bad = new OpenAI({ baseURL: EDGE_URL + "/v1", apiKey: "sy-not-a-key", maxRetries: 0 });
let authError = "";
try {
  await bad.chat.completions.create({ model: EDGE_MODEL, messages: [{ role: "user", content: "hi" }] });
  fail("a bad key was accepted");
} catch (e) {
  if (!(e instanceof OpenAI.AuthenticationError) || e.status !== 401) fail("bad key: want AuthenticationError, got " + e);
  authError = e.constructor.name;
}
// Streaming with usage: the SDK's own stream reader, chunks until [DONE].
const stream = await client.chat.completions.create({
  model: EDGE_MODEL, messages: [{ role: "user", content: "Stream to me from the OpenAI SDK" }], max_tokens: 64,
  stream: true, stream_options: { include_usage: true },
});
let streamText = "", streamUsage = null, chunks = 0, finish = "";
for await (const chunk of stream) {
  chunks++;
  streamText += chunk.choices?.[0]?.delta?.content ?? "";
  finish = chunk.choices?.[0]?.finish_reason ?? finish;
  if (chunk.usage) streamUsage = chunk.usage;
}
if (!streamText || finish !== "stop") fail("stream: text " + JSON.stringify(streamText) + " finish " + finish);
if (!(streamUsage?.prompt_tokens > 0 && streamUsage?.completion_tokens > 0)) fail("stream usage: " + JSON.stringify(streamUsage));
// A stream cut after deltas (every vendor cuts this prompt's stream after
// two chunks): the SDK raises the in-stream error; no [DONE] ends it.
let cutText = "", cutError = "";
try {
  const cut = await client.chat.completions.create({ model: EDGE_MODEL, messages: [{ role: "user", content: "[[sim:stream=cut:2]] Tell me a long story" }], stream: true });
  for await (const chunk of cut) cutText += chunk.choices?.[0]?.delta?.content ?? "";
  fail("a cut stream ended without an error: " + JSON.stringify(cutText));
} catch (e) {
  if (!(e instanceof OpenAI.APIError) || !/stream_interrupted|cut/.test(String(e.message) + JSON.stringify(e.error ?? {}))) fail("cut stream: want an APIError, got " + e);
  cutError = e.constructor.name;
}
if (!cutText) fail("the cut stream sent no text before its error");
console.log(JSON.stringify({ model: res.model, text, usage: u, authError, stream: { text: streamText, usage: streamUsage, chunks }, cutError }));
