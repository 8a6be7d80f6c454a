// Runs one call of the official SendGrid Node libraries, as an application would, against the
// base URL it is given. Reads a JSON job on stdin, prints one JSON answer on stdout.
//   {"op": "request", "base_url", "api_key", "method", "url", "body", "headers"}
//   {"op": "send", "base_url", "api_key", "message"}            (@sendgrid/mail)
//   {"op": "verify", "public_key", "payload", "signature", "timestamp"} (@sendgrid/eventwebhook)
"use strict";

const client = require("@sendgrid/client");
const mail = require("@sendgrid/mail");
const { EventWebhook } = require("@sendgrid/eventwebhook");

function answer(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

function failure(err) {
  if (err.response) {
    return { ok: false, status: err.code, body: err.response.body, headers: err.response.headers };
  }
  return { ok: false, status: null, error: String(err) };
}

async function main(job) {
  if (job.op === "verify") {
    const hook = new EventWebhook();
    const key = hook.convertPublicKeyToECDSA(job.public_key);
    return { ok: hook.verifySignature(key, job.payload, job.signature, job.timestamp) };
  }
  client.setApiKey(job.api_key);
  client.setDefaultRequest("baseUrl", job.base_url);
  if (job.op === "send") {
    mail.setClient(client);
    const [response] = await mail.send(job.message);
    return { ok: true, status: response.statusCode, headers: response.headers, body: response.body };
  }
  if (job.op === "request") {
    const [response, body] = await client.request({
      method: job.method,
      url: job.url,
      body: job.body,
      headers: job.headers || {},
    });
    return { ok: true, status: response.statusCode, headers: response.headers, body };
  }
  throw new Error("unknown op " + job.op);
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  main(JSON.parse(input)).then(answer, (err) => answer(failure(err)));
});
