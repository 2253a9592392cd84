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
let streamError = "";
try {
  await client.chat.completions.create({ model: EDGE_MODEL, messages: [{ role: "user", content: "hi" }], stream: true });
  fail("stream: true was accepted");
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError)) fail("stream: want BadRequestError, got " + e);
  streamError = e.constructor.name;
}
console.log(JSON.stringify({ model: res.model, text, usage: u, authError, streamError }));
