// Produces HTTP messages with the npm `cloudevents` SDK, the JavaScript producer a Node.js app uses.
// stdin: {"type": "...", "source": "...", "prefix": "..."}; stdout: {"structured": {headers, body},
// "binary": {headers, body}, "batch": {headers, body}} for the test to POST as they are.
"use strict";
const { CloudEvent, HTTP, CONSTANTS } = require("cloudevents");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { type, source, prefix } = JSON.parse(input);
  const make = (id, data) =>
    new CloudEvent({ id: `${prefix}-${id}`, type, source, subject: `js/${id}`, data, tenant: "contoso", priority: 5 });
  const structured = HTTP.structured(make("structured", { mode: "structured" }));
  const binary = HTTP.binary(make("binary", { mode: "binary" }));
  // The SDK has no batch emitter: a batch is the events' JSON forms in one array (HTTP binding 3.3).
  const batch = {
    headers: { "content-type": CONSTANTS.MIME_CE_BATCH },
    body: JSON.stringify([make("batch-0", { n: 0 }), make("batch-1", { n: 1 })].map((e) => e.toJSON())),
  };
  process.stdout.write(JSON.stringify({ structured, binary, batch }));
});
