/** PushClient against a scripted in-process Edge: handshake, pushes, acks, dedup,
 * heartbeats, GoAway, reconnects and errors. Mirrors the Python SDK's tests. */

import { status } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { performance } from "node:perf_hooks";
import { afterEach, beforeEach, describe, test } from "node:test";

import { AuthError, Backoff, GoAway_Reason, type Message, PushClient, type PushClientOptions, PushError, TimeoutError } from "../src/index";
import { EdgeConn, FakeEdge, WAIT, msg, within } from "./fakes";

/** A real Backoff that counts how often the client asked for a failure delay. */
class CountingBackoff extends Backoff {
  calls = 0;
  constructor(baseMs = 10, capMs = 50) {
    super(baseMs, capMs);
  }
  override nextDelay(): number {
    this.calls += 1;
    return super.nextDelay();
  }
}

let edge: FakeEdge;
const clients: PushClient[] = [];

beforeEach(async () => {
  edge = await new FakeEdge().start();
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close(0)));
  await edge.stop();
});

function makeClient(options: PushClientOptions = {}): PushClient {
  const client = new PushClient(edge.address, {
    userId: "u1",
    deviceId: "d1",
    backoff: new CountingBackoff(),
    ...options,
  });
  clients.push(client);
  return client.start();
}

async function nextMessage(client: PushClient): Promise<Message> {
  const result = await within(client.next(), WAIT, "a message");
  assert.equal(result.done, false, "iteration ended");
  return result.value as Message;
}

function since(t: number): number {
  return performance.now() - t;
}

describe("PushClient", () => {
  test("needs a token or a device id", () => {
    assert.throws(() => new PushClient("127.0.0.1:1"), /token/);
    assert.throws(() => new PushClient("127.0.0.1:1", { userId: "u1" }), /token/);
    assert.throws(() => new PushClient("", { token: "t" }), /edge address/);
    new PushClient("127.0.0.1:1", { token: "t" });
    new PushClient("127.0.0.1:1", { deviceId: "d1" });
  });

  test("hello, welcome, then pushes in order", async () => {
    const client = makeClient({ token: "tok", clientVersion: "test/1" });
    const conn = await edge.nextConn();
    assert.deepEqual(
      [conn.hello.token, conn.hello.userId, conn.hello.deviceId, conn.hello.clientVersion],
      ["tok", "u1", "d1", "test/1"],
    );
    conn.welcome({ sessionId: "sess-1", edgeId: "edge-7" });
    await client.waitConnected(WAIT);
    assert.deepEqual([client.sessionId, client.edgeId, client.connects, client.connected], ["sess-1", "edge-7", 1, true]);

    conn.push(msg("m1", { payload: Buffer.from("hello"), contentType: "text/plain", labels: { k: "v" } }), msg("m2"));
    conn.push(msg("m3"));
    const got = [await nextMessage(client), await nextMessage(client), await nextMessage(client)];
    assert.deepEqual(got.map((m) => m.messageId), ["m1", "m2", "m3"]);
    assert.equal(Buffer.from(got[0].payload).toString(), "hello");
    assert.equal(got[0].contentType, "text/plain");
    assert.deepEqual(got[0].labels, { k: "v" });
  });

  test("auto acks arrive coalesced", async () => {
    const client = makeClient();
    const conn = await edge.nextConn();
    conn.welcome();
    const ids = Array.from({ length: 50 }, (_, i) => `m${i}`);
    conn.push(...ids.map((id) => msg(id)));
    for (let i = 0; i < 50; i++) await nextMessage(client);
    const frames = await conn.acksUntil(ids);
    // Handed over in one burst, so the acks travel together, not one frame per message.
    assert.ok(frames.length <= 2, `50 acks took ${frames.length} frames`);
  });

  test("a duplicate is acked again but not handed over", async () => {
    const client = makeClient();
    const conn = await edge.nextConn();
    conn.welcome();
    conn.push(msg("m1"));
    assert.equal((await nextMessage(client)).messageId, "m1");
    await conn.acksUntil(["m1"]);
    // The edge redelivers m1 (e.g. an inbox replay): the app must not see it again, but the
    // edge must get its ack again so it can drop the copy.
    conn.push(msg("m1", { requiresAck: true }));
    assert.deepEqual((await conn.acks.get()).messageIds, ["m1"]);
    conn.push(msg("m2"));
    assert.equal((await nextMessage(client)).messageId, "m2");
  });

  test("a duplicate within one batch is dropped", async () => {
    const client = makeClient();
    const conn = await edge.nextConn();
    conn.welcome();
    conn.push(msg("m1"), msg("m1"), msg("m2"));
    assert.deepEqual([(await nextMessage(client)).messageId, (await nextMessage(client)).messageId], ["m1", "m2"]);
    await conn.acksUntil(["m1", "m2"]);
  });

  test("manual ack", async () => {
    const client = makeClient({ autoAck: false });
    const conn = await edge.nextConn();
    conn.welcome();
    conn.push(msg("m1"), msg("m2"));
    await nextMessage(client);
    await nextMessage(client);
    await client.ack("m2");
    // Nothing was acked on its own: the first ack frame holds only what the app acked.
    assert.deepEqual((await conn.acks.get()).messageIds, ["m2"]);
    await client.ack("m1");
    assert.deepEqual((await conn.acks.get()).messageIds, ["m1"]);
  });

  test("a large ack goes out in frames the edge accepts", async () => {
    const client = makeClient({ autoAck: false });
    const conn = await edge.nextConn();
    conn.welcome();
    const ids = Array.from({ length: 2500 }, (_, i) => `m${i}`);
    await client.ack(...ids);
    const sizes: number[] = [];
    const acked: string[] = [];
    while (acked.length < ids.length) {
      const frame = await conn.acks.get();
      sizes.push(frame.messageIds.length);
      acked.push(...frame.messageIds);
    }
    assert.deepEqual(sizes, [1000, 1000, 500]);
    assert.deepEqual(acked, ids);
  });

  test("a Welcome announcing frames over the receive limit reconnects once, with a limit to match", async () => {
    const client = makeClient();
    const first = await edge.nextConn();
    first.welcome({ maxFrameBytes: 6 * 1024 * 1024 });
    // The default 4 MiB limit would refuse the frames this edge may send, frame after frame.
    const second = await edge.nextConn();
    second.welcome({ maxFrameBytes: 6 * 1024 * 1024 });
    second.push(msg("big", { payload: Buffer.alloc(5 * 1024 * 1024, 7) }));
    const got = await nextMessage(client);
    assert.equal(got.messageId, "big");
    assert.equal(got.payload.length, 5 * 1024 * 1024);
    await second.acksUntil(["big"]);
    assert.equal(edge.all.length, 2, "reconnected more than once");
    assert.equal(client.connects, 2);
  });

  test("a receive limit set in channelOptions is left as set", async () => {
    const client = makeClient({ channelOptions: { "grpc.max_receive_message_length": 8 * 1024 * 1024 } });
    const conn = await edge.nextConn();
    conn.welcome({ maxFrameBytes: 6 * 1024 * 1024 });
    conn.push(msg("big", { payload: Buffer.alloc(5 * 1024 * 1024, 7) }));
    assert.equal((await nextMessage(client)).payload.length, 5 * 1024 * 1024);
    await conn.acksUntil(["big"]);
    assert.equal(edge.all.length, 1, "reconnected although the limit was pinned");
  });

  test("acks made while disconnected go out after the reconnect", async () => {
    const client = makeClient({ autoAck: false });
    const first = await edge.nextConn();
    first.welcome();
    first.push(msg("m1"));
    await nextMessage(client);
    first.abort(status.UNAVAILABLE, "edge restarting");
    const second = await edge.nextConn(); // the client is now between Hello and Welcome
    await client.ack("m1");
    second.welcome();
    assert.deepEqual((await second.acks.get()).messageIds, ["m1"]);
  });

  test("heartbeat pings use the Welcome interval and pongs keep the stream alive", async () => {
    const client = makeClient();
    const conn = await edge.nextConn();
    const welcomedAt = performance.now();
    conn.welcome({ heartbeatMs: 100 });
    await client.waitConnected(WAIT);
    await conn.pings.get();
    assert.ok(since(welcomedAt) >= 90, "paced by the Welcome, not sent at once");
    // Four pings span 400 ms, beyond the 300 ms silence limit: the pongs kept it alive.
    for (let i = 0; i < 3; i++) await conn.pings.get();
    assert.equal(client.connects, 1);
    assert.equal(edge.all.length, 1);
    assert.equal(conn.gone.done, false);
  });

  test("a silent edge is treated as dead and replaced", async () => {
    const client = makeClient({ heartbeatIntervalMs: 50 });
    const first = await edge.nextConn();
    first.autoPong = false;
    const welcomedAt = performance.now();
    first.welcome({ heartbeatMs: 10_000 }); // the client's own interval wins
    await first.pings.get();
    const second = await edge.nextConn();
    // Dead only after three silent intervals, not at the first unanswered ping.
    assert.ok(second.helloAt - welcomedAt >= 140, `declared dead after ${second.helloAt - welcomedAt} ms`);
    await within(first.gone.promise);
    second.welcome();
    await client.waitConnected(WAIT);
    assert.equal(client.connects, 2);
  });

  test("GoAway reconnects after its delay, without backoff", async () => {
    const backoff = new CountingBackoff(5000, 5000); // would blow the time limit if used
    const client = makeClient({ backoff });
    const first = await edge.nextConn();
    first.welcome({ sessionId: "s-old" });
    await client.waitConnected(WAIT);
    const sentAt = performance.now();
    first.goAway(300, GoAway_Reason.DRAINING);
    const second = await edge.nextConn();
    assert.ok(second.helloAt - sentAt >= 290, `reconnected after ${second.helloAt - sentAt} ms`);
    assert.equal(second.hello.deviceId, "d1");
    await within(first.gone.promise); // the old stream was closed
    assert.equal(client.lastGoAway?.reason, GoAway_Reason.DRAINING);
    assert.equal(client.lastGoAway?.reconnectAfterMs, 300);

    second.welcome({ sessionId: "s-new" });
    second.push(msg("after"));
    assert.equal((await nextMessage(client)).messageId, "after");
    assert.deepEqual([client.sessionId, client.connects, backoff.calls], ["s-new", 2, 0]);
  });

  test("a GoAway before the Welcome is honoured", async () => {
    const backoff = new CountingBackoff(5000, 5000);
    const client = makeClient({ backoff });
    const first = await edge.nextConn();
    const sentAt = performance.now();
    first.goAway(100, GoAway_Reason.DRAINING);
    const second = await edge.nextConn();
    assert.ok(second.helloAt - sentAt >= 90);
    second.welcome();
    await client.waitConnected(WAIT);
    assert.deepEqual([client.connects, backoff.calls], [1, 0]);
  });

  test("UNAVAILABLE, then it reconnects", async () => {
    const backoff = new CountingBackoff();
    const client = makeClient({ backoff });
    const first = await edge.nextConn();
    first.abort(status.UNAVAILABLE, "try later");
    const second = await edge.nextConn();
    second.welcome();
    second.push(msg("m1"));
    assert.equal((await nextMessage(client)).messageId, "m1");
    assert.deepEqual([client.connects, backoff.calls, backoff.attempt], [1, 1, 0]); // reset by the Welcome
  });

  test("a clean end of stream reconnects", async () => {
    const client = makeClient();
    const first = await edge.nextConn();
    first.welcome();
    await client.waitConnected(WAIT);
    first.end();
    const second = await edge.nextConn();
    second.welcome();
    second.push(msg("m1"));
    assert.equal((await nextMessage(client)).messageId, "m1");
    assert.equal(client.connects, 2);
  });

  test("RESOURCE_EXHAUSTED honours retry-after-ms", async () => {
    const client = makeClient();
    const first = await edge.nextConn();
    const abortedAt = performance.now();
    first.abort(status.RESOURCE_EXHAUSTED, "slow down", { "retry-after-ms": "300" });
    const second = await edge.nextConn();
    // The backoff alone (base 10 ms) would have come back much sooner.
    assert.ok(second.helloAt - abortedAt >= 290, `reconnected after ${second.helloAt - abortedAt} ms`);
    second.welcome();
    await client.waitConnected(WAIT);
  });

  test("UNAUTHENTICATED surfaces as an AuthError and stops", async () => {
    const client = makeClient({ token: "bad" });
    const conn = await edge.nextConn();
    conn.abort(status.UNAUTHENTICATED, "token expired");
    const err = await within(client.next().then(() => null, (e: unknown) => e));
    assert.ok(err instanceof AuthError, `got ${String(err)}`);
    assert.equal(err.code, status.UNAUTHENTICATED);
    assert.equal(err.details, "token expired");
    assert.equal(err.retriable, false);
    // Sticky, from both entry points, and no retry was made.
    await assert.rejects(client.next(), AuthError);
    await assert.rejects(client.waitConnected(WAIT), AuthError);
    assert.equal(edge.all.length, 1);
  });

  for (const code of [status.INVALID_ARGUMENT, status.PERMISSION_DENIED]) {
    test(`${status[code]} surfaces as a PushError`, async () => {
      const client = makeClient();
      (await edge.nextConn()).abort(code, "no");
      const err = await within(client.waitConnected(WAIT).then(() => null, (e: unknown) => e));
      assert.ok(err instanceof PushError && !(err instanceof AuthError), `got ${String(err)}`);
      assert.equal(err.code, code);
      assert.equal(err.retriable, false);
    });
  }

  test("with reconnect off the retriable error surfaces", async () => {
    const client = makeClient({ reconnect: false });
    const conn = await edge.nextConn();
    conn.welcome();
    conn.push(msg("m1"));
    conn.abort(status.UNAVAILABLE, "gone");
    // Messages that arrived before the failure are still handed over first.
    assert.equal((await nextMessage(client)).messageId, "m1");
    await assert.rejects(within(client.next()), (err: unknown) => err instanceof PushError && err.code === status.UNAVAILABLE);
  });

  test("close flushes acks, half-closes and ends the iteration", async () => {
    const client = makeClient();
    const conn = await edge.nextConn();
    conn.welcome();
    conn.push(msg("m1"));
    assert.equal((await nextMessage(client)).messageId, "m1");
    const waiter = client.next(); // a blocked iteration must be released
    await client.close();
    // The ack went out before the stream was half-closed.
    assert.deepEqual(conn.acked, ["m1"]);
    assert.equal(conn.halfClosed.done, true);
    assert.deepEqual(await within(waiter), { done: true, value: undefined });
    assert.deepEqual(await client.next(), { done: true, value: undefined });
    assert.equal(client.closed, true);
    assert.equal(client.connected, false);
    await client.close(); // idempotent
  });

  test("for await ends after close", async () => {
    const client = makeClient();
    const conn = await edge.nextConn();
    conn.welcome();
    conn.push(msg("a"), msg("b"));
    const seen: string[] = [];
    for await (const message of client) {
      seen.push(message.messageId);
      if (seen.length === 2) void client.close();
    }
    assert.deepEqual(seen, ["a", "b"]);
  });

  test("waitConnected times out when the edge is unreachable", async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer();
      srv.listen(0, "127.0.0.1", () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p)); // a port nobody listens on
      });
    });
    const client = new PushClient(`127.0.0.1:${port}`, { deviceId: "d1", backoff: new CountingBackoff() });
    clients.push(client);
    await assert.rejects(client.waitConnected(200), TimeoutError);
    assert.equal(client.connects, 0);
  });

  test("close does not hang on an edge that ignores the half-close", async () => {
    edge.endOnHalfClose = false;
    const client = makeClient();
    const conn: EdgeConn = await edge.nextConn();
    conn.welcome();
    await client.waitConnected(WAIT);
    const started = performance.now();
    await client.close(100);
    assert.ok(since(started) < 900, `close took ${since(started)} ms`);
    await within(conn.gone.promise); // cancelled once the grace ran out
  });
});
