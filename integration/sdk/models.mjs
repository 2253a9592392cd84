// GET /v1/models through both official SDKs: client.models.list() as an
// application calls it (the Anthropic SDK pages through has_more/after_id).
// Prints one JSON line: the ids each SDK saw and the class of each SDK's
// error for a bad key.
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const { EDGE_URL, EDGE_KEY, PAGE_LIMIT } = process.env;
const fail = (msg) => { console.error("models sdk: " + msg); process.exit(1); };

const openai = new OpenAI({ baseURL: EDGE_URL + "/v1", apiKey: EDGE_KEY, maxRetries: 0 });
const oai = [];
for await (const m of openai.models.list()) {
  if (m.object !== "model") fail("openai: not a model: " + JSON.stringify(m));
  oai.push(m.id);
}

const anthropic = new Anthropic({ baseURL: EDGE_URL, apiKey: EDGE_KEY, maxRetries: 0 });
const ant = [];
let pages = 0;
for await (const page of (await anthropic.models.list({ limit: Number(PAGE_LIMIT || 20) })).iterPages()) {
  pages++;
  for (const m of page.data) {
    if (m.type !== "model" || !m.display_name || !m.created_at) fail("anthropic: not a model: " + JSON.stringify(m));
    ant.push(m.id);
  }
}

const errors = {};
try {
  await new OpenAI({ baseURL: EDGE_URL + "/v1", apiKey: "sy-not-a-key", maxRetries: 0 }).models.list();
} catch (e) {
  errors.openai = e.constructor.name + " " + e.status;
}
try {
  await new Anthropic({ baseURL: EDGE_URL, apiKey: "sy-not-a-key", maxRetries: 0 }).models.list();
} catch (e) {
  errors.anthropic = e.constructor.name + " " + e.status + " " + (e.error?.error?.type ?? "");
}
console.log(JSON.stringify({ openai: oai, anthropic: ant, anthropicPages: pages, errors }));
