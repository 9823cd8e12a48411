/**
 * A scriptable in-process Edge (and Push) server for the SDK tests, like the Python SDK's
 * tests/sdk/fakes.py. Each client connection becomes an EdgeConn that the test drives by hand.
 */

import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import { afterEach, beforeEach } from "node:test";

import { PushSender } from "../src/index";
import { type Ack, type ClientFrame, EdgeService, GoAway_Reason, type Hello, type ServerFrame } from "../src/gen/pushplat/v1/edge";
import type { Message } from "../src/gen/pushplat/v1/message";
import { PushService, type SendBatchRequest, type SendBatchResponse, type SendRequest, type SendResponse } from "../src/gen/pushplat/v1/push";

/** Upper bound for any single expected event; tests normally take milliseconds. */
export const WAIT = 3000;

export class Deferred<T = void> {
  readonly promise: Promise<T>;
  resolve!: (value: T) => void;
  done = false;
  constructor() {
    this.promise = new Promise<T>((resolve) => {
      this.resolve = (value: T) => {
        this.done = true;
        resolve(value);
      };
    });
  }
}

/** Rejects if `promise` does not settle within `ms`. */
export async function within<T>(promise: Promise<T>, ms = WAIT, what = "an event"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export class AsyncQueue<T> {
  private items: T[] = [];
  private waiters: Array<(value: T) => void> = [];

  put(value: T): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(value);
    else this.items.push(value);
  }

  get(ms = WAIT, what = "a queued item"): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift() as T);
    let waiter: (value: T) => void = () => {};
    const got = new Promise<T>((resolve) => {
      waiter = resolve;
      this.waiters.push(waiter);
    });
    return within(got, ms, what).catch((err) => {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      throw err;
    });
  }
}

export function msg(messageId: string, fields: Partial<Message> = {}): Message {
  return {
    messageId,
    payload: Buffer.from("x"),
    contentType: "",
    priority: 0,
    createdAtMs: 0,
    expiresAtMs: 0,
    collapseKey: "",
    requiresAck: false,
    labels: {},
    topic: "",
    ...fields,
  };
}

/** The server's view of one Connect stream. */
export class EdgeConn {
  readonly acks = new AsyncQueue<Ack>();
  readonly pings = new AsyncQueue<void>();
  readonly topicFrames = new AsyncQueue<ClientFrame>();
  readonly acked: string[] = [];
  readonly halfClosed = new Deferred();
  readonly gone = new Deferred();
  autoPong = true;

  constructor(
    readonly call: ServerDuplexStream<ClientFrame, ServerFrame>,
    readonly hello: Hello,
    readonly index: number,
    readonly helloAt: number,
  ) {}

  send(frame: Partial<ServerFrame>): void {
    this.call.write(frame as ServerFrame);
  }

  welcome(options: { sessionId?: string; edgeId?: string; heartbeatMs?: number; maxFrameBytes?: number } = {}): void {
    this.send({
      welcome: {
        sessionId: options.sessionId ?? `s${this.index}`,
        edgeId: options.edgeId ?? "edge-test",
        heartbeatIntervalMs: options.heartbeatMs ?? 0,
        maxFrameBytes: options.maxFrameBytes ?? 0,
      },
    });
  }

  push(...messages: Message[]): void {
    this.send({ pushes: { messages } });
  }

  goAway(reconnectAfterMs: number, reason = GoAway_Reason.MAX_AGE): void {
    this.send({ goAway: { reason, reconnectAfterMs, detail: "test" } });
  }

  /** End the stream with OK. */
  end(): void {
    if (!this.call.writableEnded) this.call.end();
  }

  abort(code: status, details = "", trailer: Record<string, string> = {}): void {
    const metadata = new Metadata();
    for (const [k, v] of Object.entries(trailer)) metadata.set(k, v);
    this.call.emit("error", { code, details, metadata });
  }

  /** Collect Ack frames until every id in `ids` has been acked; returns the frames. */
  async acksUntil(ids: string[], ms = WAIT): Promise<Ack[]> {
    const frames: Ack[] = [];
    const deadline = performance.now() + ms;
    while (!ids.every((id) => this.acked.includes(id))) {
      frames.push(await this.acks.get(Math.max(1, deadline - performance.now()), `acks of ${ids.join(",")}`));
    }
    return frames;
  }
}

export class FakeEdge {
  address = "";
  readonly conns = new AsyncQueue<EdgeConn>();
  readonly all: EdgeConn[] = [];
  endOnHalfClose = true;
  private server = new Server();

  async start(creds: ServerCredentials = ServerCredentials.createInsecure()): Promise<this> {
    this.server.addService(EdgeService, { connect: (call: ServerDuplexStream<ClientFrame, ServerFrame>) => this.connect(call) });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  nextConn(ms = WAIT): Promise<EdgeConn> {
    return this.conns.get(ms, "a connection");
  }

  async stop(): Promise<void> {
    for (const conn of this.all) conn.end();
    this.server.forceShutdown();
  }

  private connect(call: ServerDuplexStream<ClientFrame, ServerFrame>): void {
    let conn: EdgeConn | null = null;
    const gone = () => conn?.gone.resolve();
    call.on("cancelled", gone);
    call.on("close", gone);
    call.on("error", () => {});
    call.on("end", () => {
      conn?.halfClosed.resolve();
      if (this.endOnHalfClose) conn?.end();
    });
    call.on("data", (frame: ClientFrame) => {
      if (conn === null) {
        conn = new EdgeConn(call, frame.hello ?? { token: "", userId: "", deviceId: "", clientVersion: "" }, this.all.length, performance.now());
        this.all.push(conn);
        this.conns.put(conn);
        return;
      }
      if (frame.ack) {
        conn.acked.push(...frame.ack.messageIds);
        conn.acks.put(frame.ack);
      } else if (frame.ping) {
        if (conn.autoPong && !call.writableEnded) conn.send({ pong: {} });
        conn.pings.put();
      } else if (frame.subscribe || frame.unsubscribe) {
        conn.topicFrames.put(frame);
      }
    });
  }
}

/** Records requests and metadata; answers with ids, or fails as told. */
export class FakePush {
  address = "";
  readonly requests: SendRequest[] = [];
  readonly metadata: Metadata[] = [];
  readonly deadlines: number[] = [];
  fail: { code: status; details: string; trailer?: Record<string, string> } | null = null;
  /** SendStream answers wait for this (replace it with a pending promise to hold them). */
  answering: Promise<void> = Promise.resolve();
  private server = new Server();

  async start(creds: ServerCredentials = ServerCredentials.createInsecure()): Promise<this> {
    this.server.addService(PushService, {
      send: (call: ServerUnaryCall<SendRequest, SendResponse>, callback: sendUnaryData<SendResponse>) => {
        if (this.check(call, callback)) return;
        this.requests.push(call.request);
        callback(null, {
          messageId: `m${this.requests.length}`,
          duplicate: call.request.idempotencyKey === "dup",
          requestId: "",
          error: undefined,
        });
      },
      sendBatch: (call: ServerUnaryCall<SendBatchRequest, SendBatchResponse>, callback: sendUnaryData<SendBatchResponse>) => {
        if (this.check(call, callback)) return;
        const responses = call.request.requests.map((r) => {
          this.requests.push(r);
          return { messageId: `m${this.requests.length}`, duplicate: false, requestId: "", error: undefined };
        });
        callback(null, { responses });
      },
      // Reads everything; answers in order while `answering` is open. Payload "refuse" gets an
      // INVALID_ARGUMENT item error.
      sendStream: (call: ServerDuplexStream<SendRequest, SendResponse>) => {
        this.metadata.push(call.metadata);
        if (this.fail !== null) {
          call.emit("error", { code: this.fail.code, details: this.fail.details });
          return;
        }
        call.sendMetadata(new Metadata());
        let answered = Promise.resolve();
        call.on("data", (request: SendRequest) => {
          this.requests.push(request);
          answered = answered.then(async () => {
            await this.answering;
            const refused = Buffer.from(request.payload).toString() === "refuse";
            call.write({
              messageId: refused ? "" : `m-${request.requestId}`,
              duplicate: false,
              requestId: request.requestId,
              error: refused ? { code: status.INVALID_ARGUMENT, message: "refused", retryAfterMs: 0 } : undefined,
            });
          });
        });
        call.on("end", () => void answered.then(() => call.end()));
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  private check(call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<never>): boolean {
    this.metadata.push(call.metadata);
    const deadline = call.getDeadline();
    if (deadline instanceof Date) this.deadlines.push(deadline.getTime() - Date.now());
    else if (typeof deadline === "number" && Number.isFinite(deadline)) this.deadlines.push(deadline - Date.now());
    if (this.fail === null) return false;
    const metadata = new Metadata();
    for (const [k, v] of Object.entries(this.fail.trailer ?? {})) metadata.set(k, v);
    callback({ code: this.fail.code, details: this.fail.details, metadata }, null);
    return true;
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
  }
}

/** One FakePush per test (started before, stopped after) and the senders made against it,
 * closed after each test. */
export function useFakePush(): { api: () => FakePush; makeSender: (apiKey?: string) => PushSender } {
  let api: FakePush;
  const senders: PushSender[] = [];
  beforeEach(async () => {
    api = await new FakePush().start();
  });
  afterEach(async () => {
    for (const s of senders.splice(0)) s.close();
    await api.stop();
  });
  return {
    api: () => api,
    makeSender(apiKey?: string): PushSender {
      const sender = new PushSender(api.address, { apiKey });
      senders.push(sender);
      return sender;
    },
  };
}

/** Poll `condition` every 5 ms until it holds; fail after `ms`. */
export async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
