/**
 * Drives the Node SDK for the cross-language tests in tests/interop: it listens as a device or
 * sends as a backend, and prints one JSON object per line (same CLI as clients/go/cmd/interop).
 *
 *   node dist/interop/main.js listen --edge HOST:PORT (--token T | --user U --device D) [--count N] [--timeout-ms MS]
 *        [--tls-ca FILE] [--digest]
 *   node dist/interop/main.js send --api HOST:PORT [--api-key K] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
 *        (--user U | --device D | --topic T) [--priority high]
 *        [--ttl S] [--collapse-key K] [--idempotency-key K] [--at-least-once] [--content-type T] [--label K=V]... PAYLOAD
 *
 * listen prints {"event":"connected",...} once welcomed, then {"event":"message",...} per message
 * (acked as it is handed over), and exits 0 after --count messages. Failures print
 * {"event":"error","code":"UNAUTHENTICATED","details":...} and exit 1 (2 for a timeout).
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";

import {
  PushClient,
  PushError,
  PushSender,
  TimeoutError,
  type TlsOptions,
  priorityName,
  statusName,
} from "../src/index";

/** Plaintext unless a CA or a client certificate is given. */
function tlsFrom(ca?: string, cert?: string, key?: string): TlsOptions | undefined {
  if (!ca && !cert) return undefined;
  return { ca: ca || undefined, cert: cert || undefined, key: key || undefined };
}

function emit(value: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function fail(err: unknown): number {
  if (err instanceof TimeoutError) {
    emit({ event: "error", code: "TIMEOUT", details: err.message });
    return 2;
  }
  if (err instanceof PushError) {
    emit({ event: "error", code: statusName(err.code), details: err.details });
    return 1;
  }
  emit({ event: "error", code: "UNKNOWN", details: String(err) });
  return 1;
}

async function listen(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      edge: { type: "string", default: "127.0.0.1:50051" },
      token: { type: "string", default: "" },
      user: { type: "string", default: "" },
      device: { type: "string", default: "" },
      count: { type: "string", default: "1" },
      "timeout-ms": { type: "string", default: "30000" },
      "tls-ca": { type: "string", default: "" },
      digest: { type: "boolean", default: false },
      topic: { type: "string", default: "" },
    },
  });
  const count = Number(values.count);
  const timeoutMs = Number(values["timeout-ms"]);
  const client = new PushClient(values.edge as string, {
    token: values.token || undefined,
    userId: values.user,
    deviceId: values.device,
    tls: tlsFrom(values["tls-ca"], "", ""),
  });
  const timer = setTimeout(() => {
    emit({ event: "error", code: "TIMEOUT", details: `gave up after ${timeoutMs} ms` });
    process.exit(2);
  }, timeoutMs);
  try {
    await client.waitConnected(timeoutMs);
    emit({ event: "connected", session_id: client.sessionId, edge_id: client.edgeId });
    if (values.topic) {
      const result = await client.subscribe(values.topic as string);
      emit({ event: "subscribed", applied: result.applied, refused: result.refused.length });
    }
    let received = 0;
    while (received < count) {
      const result = await client.next();
      if (result.done) throw new PushError(1, "client closed");
      const m = result.value;
      const payload = Buffer.from(m.payload);
      const text = payload.toString("utf8");
      const utf8 = Buffer.from(text, "utf8").equals(payload);
      // With --digest, large payloads are shown by size and hash, not printed whole.
      const shown = values.digest ? {} : { payload: utf8 ? text : payload.toString("base64") };
      emit({
        event: "message",
        message_id: m.messageId,
        ...shown,
        ...(utf8 || values.digest ? {} : { payload_encoding: "base64" }),
        payload_bytes: payload.length,
        payload_sha256: createHash("sha256").update(payload).digest("hex"),
        priority: priorityName(m.priority),
        content_type: m.contentType,
        collapse_key: m.collapseKey,
        created_at_ms: m.createdAtMs,
        requires_ack: m.requiresAck,
        labels: m.labels,
        topic: m.topic,
        session_id: client.sessionId,
        connects: client.connects,
      });
      received += 1;
    }
    return 0;
  } catch (err) {
    return fail(err);
  } finally {
    clearTimeout(timer);
    await client.close();
  }
}

async function send(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      api: { type: "string", default: "127.0.0.1:50052" },
      "api-key": { type: "string", default: "" },
      user: { type: "string" },
      device: { type: "string" },
      topic: { type: "string" },
      priority: { type: "string", default: "normal" },
      ttl: { type: "string", default: "0" },
      "collapse-key": { type: "string", default: "" },
      "idempotency-key": { type: "string", default: "" },
      "at-least-once": { type: "boolean", default: false },
      "content-type": { type: "string", default: "text/plain" },
      label: { type: "string", multiple: true, default: [] },
      "tls-ca": { type: "string", default: "" },
      "tls-cert": { type: "string", default: "" },
      "tls-key": { type: "string", default: "" },
    },
  });
  if (positionals.length !== 1) {
    process.stderr.write("interop send: give exactly one PAYLOAD\n");
    return 2;
  }
  const labels: Record<string, string> = {};
  for (const item of values.label as string[]) {
    const i = item.indexOf("=");
    if (i < 0) throw new TypeError(`label ${item} is not K=V`);
    labels[item.slice(0, i)] = item.slice(i + 1);
  }
  const sender = new PushSender(values.api as string, {
    apiKey: values["api-key"] || undefined,
    tls: tlsFrom(values["tls-ca"], values["tls-cert"], values["tls-key"]),
  });
  try {
    const response = await sender.send({
      userId: values.user,
      deviceId: values.device,
      topic: values.topic,
      payload: positionals[0],
      contentType: values["content-type"],
      priority: values.priority,
      ttlSeconds: Number(values.ttl),
      collapseKey: values["collapse-key"],
      idempotencyKey: values["idempotency-key"],
      atLeastOnce: values["at-least-once"],
      labels,
    });
    emit({ event: "sent", message_id: response.messageId, duplicate: response.duplicate });
    return 0;
  } catch (err) {
    return fail(err);
  } finally {
    sender.close();
  }
}

async function main(): Promise<number> {
  const [command, ...args] = process.argv.slice(2);
  if (command === "listen") return listen(args);
  if (command === "send") return send(args);
  process.stderr.write("usage: main.js listen|send [options]\n");
  return 2;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = fail(err);
  },
);
