// The OpenAI Node SDK (the `openai` npm package, v4) against the proxy:
// models.list(), models.retrieve() of a listed model and of an unknown one,
// and completions.create(), not streamed and streamed.
//
// Usage: node models.mjs SDK_DIR BASE_URL API_KEY
//   SDK_DIR   where `npm install --prefix SDK_DIR openai@4` put the package
//   BASE_URL  the proxy's OpenAI base, e.g. http://127.0.0.1:8000/v1
//   API_KEY   the client token (any string when the proxy needs none)
// Prints one line of JSON with what it saw; exits 1 on an unexpected error.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const [sdkDir, baseURL, apiKey] = process.argv.slice(2);
if (!sdkDir || !baseURL || !apiKey) {
  console.error("usage: node models.mjs SDK_DIR BASE_URL API_KEY");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(sdkDir), "node_modules", "noop.js"));
const mod = require("openai");
const OpenAI = mod.OpenAI ?? mod.default ?? mod;
const sdkVersion = JSON.parse(
  readFileSync(path.join(path.resolve(sdkDir), "node_modules", "openai", "package.json"), "utf8"),
).version;

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const out = { sdk_version: sdkVersion };

const list = await client.models.list();
out.list = list.data.map((m) => m.id);
const one = await client.models.retrieve("qwen-3-32b");
out.retrieved = { id: one.id, object: one.object, created: one.created, owned_by: one.owned_by };
try {
  await client.models.retrieve("no-such-model");
  out.missing = "no error";
} catch (e) {
  out.missing = { status: e.status, name: e.constructor.name };
}
const c = await client.completions.create({ model: out.list[0], prompt: "Say hello", max_tokens: 8 });
out.completion = { object: c.object, text: c.choices[0].text, usage: c.usage };
const stream = await client.completions.create({ model: out.list[0], prompt: "Count", stream: true });
let text = "";
for await (const ev of stream) {
  for (const ch of ev.choices ?? []) text += ch.text ?? "";
}
out.streamed = text;
console.log(JSON.stringify(out));
