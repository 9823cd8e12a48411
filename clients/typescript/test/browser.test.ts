/** The browser build's PushClient over WebSocket, against a fake edge on the `ws` package
 * (Node 20 has no WebSocket client of its own; `ws` stands in for the browser's). The shared
 * protocol logic is covered in client.test.ts; this covers the wire and the close codes. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";

import {
  AuthError,
  Backoff,
  GoAway_Reason,
  type Message,
  PushClient,
  PushError,
  Status,
  SUBPROTOCOL,
  type WebSocketConstructor,
  errorFromClose,
} from "../src/browser/index";
import { ClientFrame, ServerFrame } from "../src/gen-web/pushplat/v1/edge";
import { AsyncQueue, WAIT, within } from "./fakes";

/** One WebSocket connection as the fake edge sees it. */
class WsConn {
  readonly frames = new AsyncQueue<ClientFrame>();
  readonly acked: string[] = [];
  readonly closed = new AsyncQueue<{ code: number; reason: string }>();
  hello: ClientFrame["hello"];
  constructor(readonly socket: WebSocket) {}

  send(frame: Partial<ServerFrame>): void {
    this.socket.send(ServerFrame.encode(frame as ServerFrame).finish());
  }

  welcome(heartbeatMs = 0, maxFrameBytes = 0): void {
    this.send({ welcome: { sessionId: "s1", edgeId: "edge-ws", heartbeatIntervalMs: heartbeatMs, maxFrameBytes } });
  }

  push(...ids: string[]): void {
    this.send({ pushes: { messages: ids.map((id) => message(id)) } });
  }

  async acksUntil(ids: string[]): Promise<void> {
    while (!ids.every((id) => this.acked.includes(id))) await this.frames.get(WAIT, `acks of ${ids}`);
  }
}

class FakeWsEdge {
  readonly conns = new AsyncQueue<WsConn>();
  readonly protocols: string[] = [];
  readonly all: WsConn[] = [];
  private server: WebSocketServer | undefined;
  url = "";

  async start(): Promise<this> {
    this.server = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
    await new Promise<void>((resolve) => this.server?.on("listening", () => resolve()));
    const address = this.server.address() as { port: number };
    this.url = `ws://127.0.0.1:${address.port}/connect`;
    this.server.on("connection", (socket, request) => {
      this.protocols.push(String(request.headers["sec-websocket-protocol"]));
      const conn = new WsConn(socket);
      socket.on("close", (code, reason) => conn.closed.put({ code, reason: reason.toString() }));
      socket.on("message", (data, isBinary) => {
        assert.ok(isBinary, "the client sent a text message");
        const frame = ClientFrame.decode(new Uint8Array(data as Buffer));
        if (frame.hello) {
          conn.hello = frame.hello;
          this.all.push(conn);
          this.conns.put(conn);
          return;
        }
        if (frame.ack) conn.acked.push(...frame.ack.messageIds);
        if (frame.ping) conn.send({ pong: {} });
        conn.frames.put(frame);
      });
    });
    return this;
  }

  next(): Promise<WsConn> {
    return this.conns.get(WAIT, "a WebSocket connection");
  }

  async stop(): Promise<void> {
    for (const client of this.server?.clients ?? []) client.terminate();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

function message(messageId: string): Message {
  return {
    messageId,
    payload: new TextEncoder().encode(`payload of ${messageId}`),
    contentType: "text/plain",
    priority: 3,
    createdAtMs: Date.now(),
    expiresAtMs: 0,
    collapseKey: "",
    requiresAck: true,
    labels: {},
    topic: "",
  };
}

const edges: FakeWsEdge[] = [];
const clients: PushClient[] = [];

async function edge(): Promise<FakeWsEdge> {
  const e = await new FakeWsEdge().start();
  edges.push(e);
  return e;
}

function client(url: string | string[], options: Record<string, unknown> = {}): PushClient {
  const c = new PushClient(url, {
    userId: "u1",
    deviceId: "tab1",
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    backoff: new Backoff(10, 50),
    ...options,
  });
  clients.push(c);
  return c.start();
}

async function next(c: PushClient): Promise<Message> {
  const result = await within(c.next(), WAIT, "a message");
  assert.equal(result.done, false);
  return result.value as Message;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close(0)));
  await Promise.all(edges.splice(0).map((e) => e.stop()));
});

describe("browser PushClient", () => {
  test("checks its URLs", () => {
    assert.throws(() => new PushClient([], { deviceId: "d" }), /URL/);
    assert.throws(() => new PushClient("http://x/", { deviceId: "d" }), /ws:\/\//);
    assert.throws(() => new PushClient("ws://x/", { WebSocket: WebSocket as unknown as WebSocketConstructor }), /token/);
  });

  test("says Hello in a binary frame under pushplat.v1, yields pushes as Uint8Array and acks them in one frame", async () => {
    const e = await edge();
    const c = client(e.url);
    const conn = await e.next();
    assert.equal(e.protocols[0], SUBPROTOCOL);
    assert.equal(conn.hello?.deviceId, "tab1");
    assert.match(conn.hello?.clientVersion ?? "", /^pushplat-browser\//);
    conn.welcome();
    await c.waitConnected(WAIT);
    assert.equal(c.edgeId, "edge-ws");
    conn.push("m1", "m2", "m3");
    const got = [await next(c), await next(c), await next(c)];
    assert.deepEqual(got.map((m) => m.messageId), ["m1", "m2", "m3"]);
    assert.ok(got[0].payload instanceof Uint8Array && !Buffer.isBuffer(got[0].payload));
    assert.equal(new TextDecoder().decode(got[0].payload), "payload of m1");
    const first = await conn.frames.get(WAIT, "the ack frame");
    assert.deepEqual(first.ack?.messageIds, ["m1", "m2", "m3"], "acks are coalesced into one frame");
  });

  test("drops a redelivered message but acks it again", async () => {
    const e = await edge();
    const c = client(e.url);
    const conn = await e.next();
    conn.welcome();
    conn.push("m1");
    assert.equal((await next(c)).messageId, "m1");
    await conn.acksUntil(["m1"]);
    conn.acked.length = 0;
    conn.push("m1", "m2");
    assert.equal((await next(c)).messageId, "m2");
    await conn.acksUntil(["m1", "m2"]);
  });

  test("frames larger than gRPC's receive limit need no reconnect: a WebSocket takes any size", async () => {
    const e = await edge();
    const c = client(e.url);
    const conn = await e.next();
    conn.welcome(0, 8 * 1024 * 1024);
    await c.waitConnected(WAIT);
    const big = { ...message("big"), payload: new Uint8Array(5 * 1024 * 1024).fill(7) };
    conn.send({ pushes: { messages: [big] } });
    const got = await next(c);
    assert.equal(got.messageId, "big");
    assert.equal(got.payload.length, 5 * 1024 * 1024);
    await conn.acksUntil(["big"]);
    assert.equal(e.all.length, 1, "the client reconnected");
    assert.equal(c.connects, 1);
  });

  test("pings at the Welcome's heartbeat interval", async () => {
    const e = await edge();
    client(e.url);
    const conn = await e.next();
    conn.welcome(50);
    const frame = await conn.frames.get(WAIT, "a ping");
    assert.ok(frame.ping, "expected a Ping");
  });

  test("after a GoAway, reconnects no sooner than its delay, to the next URL", async () => {
    const a = await edge();
    const b = await edge();
    const c = client([a.url, b.url]);
    // The first attempt goes to a random URL; whichever it is, the next one is the other.
    const deadline = performance.now() + WAIT;
    while (a.all.length + b.all.length === 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const [firstEdge, other] = a.all.length > 0 ? [a, b] : [b, a];
    const first = await firstEdge.next();
    first.welcome();
    await c.waitConnected(WAIT);
    const sent = performance.now();
    first.send({ goAway: { reason: GoAway_Reason.DRAINING, reconnectAfterMs: 300, detail: "draining" } });
    const second = await other.next();
    assert.ok(performance.now() - sent >= 290, "reconnected before the GoAway's delay");
    second.welcome();
    second.push("after");
    assert.equal((await next(c)).messageId, "after");
    assert.equal(c.lastGoAway?.reason, GoAway_Reason.DRAINING);
  });

  test("close code 4016 is an AuthError that ends the iteration, not a retry", async () => {
    const e = await edge();
    const c = client(e.url);
    const conn = await e.next();
    conn.socket.close(4000 + Status.UNAUTHENTICATED, "bad token: signature verification failed");
    const err = await within(c.next().then(() => null, (error: unknown) => error), WAIT, "the error");
    assert.ok(err instanceof AuthError, String(err));
    assert.equal(err.code, Status.UNAUTHENTICATED);
    assert.equal(err.details, "bad token: signature verification failed");
  });

  test("a retry-after hint in the close reason delays the next attempt", async () => {
    const e = await edge();
    client(e.url);
    const conn = await e.next();
    const closed = performance.now();
    conn.socket.close(4000 + Status.RESOURCE_EXHAUSTED, "retry-after-ms=400 too many connects");
    await e.next();
    assert.ok(performance.now() - closed >= 390, "retried before the server's retry-after");
  });

  test("a refused or dropped connection is retried with backoff", async () => {
    const e = await edge();
    const c = client(e.url);
    (await e.next()).socket.terminate();
    const again = await e.next();
    again.welcome();
    await c.waitConnected(WAIT);
    assert.equal(c.connects, 1);
  });

  test("close codes map to the gRPC statuses of the error table", () => {
    assert.equal(errorFromClose(1000, "", "u"), null);
    assert.equal(errorFromClose(4003, "the first frame must be Hello", "u")?.code, Status.INVALID_ARGUMENT);
    assert.equal(errorFromClose(4007, "taken", "u")?.retriable, false);
    const busy = errorFromClose(4008, "retry-after-ms=250 busy", "u");
    assert.equal(busy?.code, Status.RESOURCE_EXHAUSTED);
    assert.equal(busy?.retryAfterMs, 250);
    assert.equal(busy?.details, "busy");
    assert.equal(errorFromClose(1009, "", "u")?.code, Status.INVALID_ARGUMENT);
    const dropped = errorFromClose(1006, "", "ws://x/connect");
    assert.ok(dropped instanceof PushError && dropped.retriable && dropped.code === Status.UNAVAILABLE);
  });

  test("the bundle is an ES module without grpc-js or Node built-ins", () => {
    // npm test runs from dist/ (the bundle is dist/browser); tests/interop compiles elsewhere and says where.
    const dist = process.env.PUSHPLAT_BROWSER_BUNDLE_DIR ?? join(__dirname, "..", "browser");
    const meta = JSON.parse(readFileSync(join(dist, "meta.json"), "utf8")) as { inputs: Record<string, unknown> };
    const inputs = Object.keys(meta.inputs);
    assert.ok(inputs.includes("src/browser/websocket.ts"), inputs.join(" "));
    assert.deepEqual(inputs.filter((i) => /grpc|node:|src\/gen\//.test(i)), []);
    const bundle = readFileSync(join(dist, "pushplat.js"), "utf8");
    assert.match(bundle, /export\s*\{/);
    assert.doesNotMatch(bundle, /require\(|Buffer\.from/);
  });
});
