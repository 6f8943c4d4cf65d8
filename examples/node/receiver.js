// A webhook receiver that verifies postbox's signatures with the Standard
// Webhooks library, skips repeats of an event it has seen (delivery is at
// least once; webhook-id is the idempotency key), and answers at once.
//
//   (cd examples/node && npm ci)
//   POSTBOX_SECRET=whsec_... node examples/node/receiver.js --port 9000
import http from "node:http";
import { parseArgs } from "node:util";
import { Webhook } from "standardwebhooks";

const { values } = parseArgs({
  options: { host: { type: "string", default: "127.0.0.1" }, port: { type: "string", default: "9000" } },
});
const secret = process.env.POSTBOX_SECRET;
if (!secret) {
  console.error("set POSTBOX_SECRET to the endpoint's secret (whsec_...)");
  process.exit(1);
}
// The library takes the base64 key, with or without the whsec_ prefix.
const webhook = new Webhook(secret.replace(/^whsec_/, ""));
const seen = new Set(); // a real app keeps processed webhook-ids in its database

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    let event;
    try {
      event = webhook.verify(body, req.headers);
    } catch (err) {
      console.error(`rejected: ${err.message}`);
      res.writeHead(400).end();
      return;
    }
    const id = req.headers["webhook-id"];
    if (seen.has(id)) {
      console.log(`duplicate ${id} skipped`);
    } else {
      seen.add(id);
      // Do the real work after answering: a slow answer counts as a failure.
      console.log(`verified ${event.type} ${id}: ${JSON.stringify(event.data)}`);
    }
    res.writeHead(204).end();
  });
});
server.listen(Number(values.port), values.host, () => {
  console.log(`listening on http://${values.host}:${values.port}/`);
});
