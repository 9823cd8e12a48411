/**
 * The device side of the edge protocol, whatever carries it: Hello, Welcome, pushes, acks,
 * pings, GoAway. One background loop owns the connection: it dials the edge through a
 * {@link Transport} (gRPC in Node, WebSocket in the browser), says Hello, reads frames,
 * heartbeats, and reconnects (exponential backoff with full jitter, or the edge's GoAway
 * delay). The application just iterates the client for messages.
 *
 * No grpc-js and no Node built-ins here: the browser build bundles this file.
 */

import { Backoff, type BackoffPolicy } from "./backoff";
import { DEFAULT_DEDUP_CAPACITY, RecentIds } from "./dedup";
import { PushError, TimeoutError, statusName } from "./errors";
// Types only (erased): the runtime code of the generated file imports grpc-js.
import type { ClientFrame, GoAway, Hello, Pong, SubscriptionResult, Welcome } from "./gen/pushplat/v1/edge";
import { type Logger, silentLogger } from "./logger";
import { Status as status } from "./status";
import { TopicRequests } from "./topics";

type Timer = ReturnType<typeof setTimeout>;

/** Used when neither the options nor the Welcome give a heartbeat interval. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 30_000;
/** A connection is dead after this many heartbeat intervals without any frame from the edge. */
export const MISSED_HEARTBEATS = 3;
/** Acks wait this long for company, so a burst of messages costs one Ack frame, not many. */
export const ACK_LINGER_MS = 10;
/** The most message ids the edge takes in one Ack frame; more go in several frames. As many
 * waiting acks go out at once, without the linger. */
export const MAX_ACK_IDS = 1000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_CLOSE_GRACE_MS = 1_000;

/** A ServerFrame whose messages are of the transport's Message type (payload Buffer or Uint8Array). */
export interface ServerFrameOf<M> {
  welcome?: Welcome | undefined;
  pushes?: { messages: M[] } | undefined;
  goAway?: GoAway | undefined;
  pong?: Pong | undefined;
  subscription?: SubscriptionResult | undefined;
}

/** What a transport reports about one connection. */
export interface ConnectionEvents<M> {
  /** A frame from the edge. */
  frame(frame: ServerFrameOf<M>): void;
  /** The connection ended: null when the edge ended it cleanly (status OK), else why. */
  end(error: PushError | null): void;
}

/** One connection attempt, as the client drives it. */
export interface Connection {
  /** Queue a frame; `done` runs once the transport has taken it (or failed). False if closed. */
  write(frame: ClientFrame, done?: (error?: Error | null) => void): boolean;
  /** No more frames from this side; the edge then ends the stream. */
  end(): void;
  /** Drop the connection now (idempotent). */
  cancel(): void;
}

/** A transport's answer to frames larger than its connection takes (see Transport.acceptFrames). */
export interface FrameLimitNote {
  /** True: the next connection takes them (the transport raised its limit); reconnect now. */
  reconnect: boolean;
  /** For the log line, e.g. "reconnecting with a receive limit to match". */
  detail: string;
}

/** The seam between the protocol and what carries it: gRPC streams, WebSockets. */
export interface Transport<M> {
  /** Where it connects, for log lines and errors. */
  readonly target: string;
  /** Dial a fresh connection (never a shared one: a balancer must be able to move us). */
  open(events: ConnectionEvents<M>): Connection;
  /**
   * The edge announced frames of up to `maxFrameBytes` (Welcome.maxFrameBytes; 0: not said).
   * Null when this connection takes them. Only transports with a receive limit of their own
   * have this (gRPC: grpc.max_receive_message_length); a browser's WebSocket takes any size.
   */
  acceptFrames?(maxFrameBytes: number): FrameLimitNote | null;
}

const GOAWAY_REASONS = ["REASON_UNSPECIFIED", "MAX_AGE", "DRAINING", "REPLACED", "HEARTBEAT_TIMEOUT", "SLOW_CONSUMER"];

/** The options every transport's PushClient takes. */
export interface ClientOptions {
  /** Device token (an HS256 JWT from `pushplat token`). */
  token?: string;
  /** Honoured by the edge only when auth is off. */
  userId?: string;
  /** Honoured by the edge only when auth is off. */
  deviceId?: string;
  clientVersion?: string;
  /** Ack each message when the iterator hands it over (default true). */
  autoAck?: boolean;
  /** How many message ids to remember for dedup (default 10 000). */
  dedupCapacity?: number;
  backoff?: BackoffPolicy;
  /** Overrides the Welcome's heartbeat_interval_ms. */
  heartbeatIntervalMs?: number;
  /** Reconnect after a lost connection (default true). */
  reconnect?: boolean;
  /** Bound on the wait for the Welcome after Hello (default 10 s). */
  connectTimeoutMs?: number;
  logger?: Logger;
}

type Outcome = { goAwayDelayMs: number | null } | { error: PushError };

/** The live stream of one connection attempt. */
class Session {
  readonly call: Connection;
  flushTimer: Timer | undefined;
  flushQueued = false;
  halfClosed = false;
  /** Ack frames written but not yet taken by the transport. */
  readonly inflight = new Set<string[]>();
  finish: (outcome: Outcome) => void = () => {};

  constructor(call: Connection) {
    this.call = call;
  }

  write(frame: ClientFrame, callback?: (error?: Error | null) => void): boolean {
    if (this.halfClosed) return false;
    try {
      return this.call.write(frame, callback);
    } catch {
      return false;
    }
  }
}

/**
 * Holds a connection to an edge and yields the messages pushed to this device; each build's
 * `PushClient` is this class with its transport.
 *
 * With `autoAck` (the default) a message is acked when the iterator hands it over. Messages
 * already seen (by `messageId`) are acked again but not handed over twice. Non-retriable
 * errors (bad token, bad request) end the iteration by throwing {@link PushError} /
 * {@link AuthError}; everything else is retried. Call {@link close} when done: breaking out
 * of a `for await` loop does not close the client.
 */
export class ClientCore<M extends { messageId: string }> implements AsyncIterable<M>, AsyncIterator<M> {
  private readonly transport: Transport<M>;
  private readonly edge: string;
  private readonly hello: Hello;
  private readonly autoAck: boolean;
  private readonly backoff: BackoffPolicy;
  private readonly heartbeatIntervalMs: number | undefined;
  private readonly reconnect: boolean;
  private readonly connectTimeoutMs: number;
  private readonly log: Logger;
  private readonly deviceLabel: string;

  // Ids handed over before (dedup), and ids the application acked: a redelivery of an acked
  // message is acked again, one not yet acked waits for the application's ack.
  private readonly seen: RecentIds;
  private readonly acked: RecentIds;
  /** Ordered set of ids still to send; survives reconnects (acks are by id, not session). */
  private pendingAcks = new Set<string>();

  private readonly queue: M[] = [];
  private wakers: Array<() => void> = [];
  /** The welcomed session (acks go there), and the attempt in progress (close cancels it). */
  private current: Session | null = null;
  private readonly topics = new TopicRequests();
  private attempt: Session | null = null;
  private loop: Promise<void> | null = null;
  private sleepTimer: Timer | undefined;
  private sleepDone: (() => void) | undefined;
  private error: PushError | null = null;
  private stopped = false;
  private closing = false;
  private _closed = false;
  private _connected = false;
  private _sessionId = "";
  private _edgeId = "";
  private _connects = 0;
  private _lastGoAway: GoAway | null = null;

  /** `clientVersion` is the default Hello.client_version of the build (e.g. "pushplat-node/0.1.0"). */
  constructor(transport: Transport<M>, options: ClientOptions, clientVersion: string) {
    if (!options.token && !options.deviceId) {
      throw new TypeError("PushClient needs a token, or a deviceId (with userId) when the edge runs without auth");
    }
    if (options.heartbeatIntervalMs !== undefined && !(options.heartbeatIntervalMs > 0)) {
      throw new RangeError(`heartbeatIntervalMs must be > 0, got ${options.heartbeatIntervalMs}`);
    }
    if (options.connectTimeoutMs !== undefined && !(options.connectTimeoutMs > 0)) {
      throw new RangeError(`connectTimeoutMs must be > 0, got ${options.connectTimeoutMs}`);
    }
    this.transport = transport;
    this.edge = transport.target;
    this.hello = {
      token: options.token ?? "",
      userId: options.userId ?? "",
      deviceId: options.deviceId ?? "",
      clientVersion: options.clientVersion ?? clientVersion,
    };
    this.autoAck = options.autoAck ?? true;
    this.backoff = options.backoff ?? new Backoff();
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
    this.reconnect = options.reconnect ?? true;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.log = options.logger ?? silentLogger;
    this.deviceLabel = options.deviceId || "-";
    const capacity = options.dedupCapacity ?? DEFAULT_DEDUP_CAPACITY;
    this.seen = new RecentIds(capacity);
    this.acked = new RecentIds(capacity);
  }

  // -- public surface -------------------------------------------------------------------

  /** The current (or last) session id from Welcome; "" before the first connect. */
  get sessionId(): string {
    return this._sessionId;
  }

  get edgeId(): string {
    return this._edgeId;
  }

  /** How many times a Welcome was received (1 + number of successful reconnects). */
  get connects(): number {
    return this._connects;
  }

  get lastGoAway(): GoAway | null {
    return this._lastGoAway;
  }

  get connected(): boolean {
    return this._connected;
  }

  get closed(): boolean {
    return this._closed;
  }

  /** Start connecting (iterating or waitConnected also start the client). */
  start(): this {
    this.ensureStarted();
    return this;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<M>> {
    for (;;) {
      if (this._closed) return { done: true, value: undefined };
      this.ensureStarted();
      const message = this.queue.shift();
      if (message !== undefined) {
        if (this.autoAck && message.messageId) this.recordAcks([message.messageId]);
        return { done: false, value: message };
      }
      if (this.stopped) {
        if (this.error) throw this.error;
        return { done: true, value: undefined };
      }
      await new Promise<void>((resolve) => this.wakers.push(resolve));
    }
  }

  /**
   * Wait until the edge has welcomed us. Rejects with a TimeoutError after `timeoutMs`, or
   * with the PushError that stopped the client.
   */
  async waitConnected(timeoutMs?: number): Promise<void> {
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    const connectsBefore = this._connects;
    for (;;) {
      if (this.error) throw this.error;
      if (this._closed) throw new PushError(status.CANCELLED, "client is closed");
      this.ensureStarted();
      // A connect that came and went while we were waking up still counts.
      if (this._connected || this._connects > connectsBefore) return;
      if (this.stopped) throw new PushError(status.UNAVAILABLE, "connection ended and reconnect is off");
      const remaining = deadline === undefined ? undefined : deadline - performance.now();
      if (remaining !== undefined && remaining <= 0) {
        throw new TimeoutError(`not connected to ${this.edge} within ${timeoutMs} ms`);
      }
      let timer: Timer | undefined;
      await new Promise<void>((resolve) => {
        this.wakers.push(resolve);
        if (remaining !== undefined) timer = setTimeout(resolve, remaining);
      });
      clearTimeout(timer);
    }
  }

  /** Ack messages by id. Acks are coalesced and sent within ~10 ms on the live stream, or
   * after the next reconnect if there is none. */
  /**
   * Subscribe this device to topics (at most 100 per call). Subscriptions belong to the device:
   * the edge keeps them across reconnects, on any edge. Resolves with the edge's answer: the
   * `applied` topics, and the `refused` ones each with a gRPC status `code` and a `message` (a
   * bad name, the device's topic limit, the store down, too many changes a second). Waits for a
   * connection first; rejects with PushError(UNAVAILABLE) if the stream ends before the answer
   * (a retry is safe: subscribing is idempotent).
   */
  async subscribe(...topics: string[]): Promise<SubscriptionResult> {
    return this.changeTopics("subscribe", topics);
  }

  /** The reverse of {@link subscribe}. */
  async unsubscribe(...topics: string[]): Promise<SubscriptionResult> {
    return this.changeTopics("unsubscribe", topics);
  }

  private async changeTopics(kind: "subscribe" | "unsubscribe", topics: string[]): Promise<SubscriptionResult> {
    const { frame, answer } = this.topics.request(kind, topics);
    try {
      await this.waitConnected(this.connectTimeoutMs);
    } catch (error) {
      answer.catch(() => {});
      this.topics.failAll();
      throw error;
    }
    const session = this.current;
    if (session === null || !session.write(frame)) this.topics.failAll();
    return answer;
  }

  async ack(...messageIds: string[]): Promise<void> {
    if (this._closed) {
      this.log.debug?.(`ack ignored: client closed ${this.fields()}`);
      return;
    }
    this.recordAcks(messageIds);
  }

  /**
   * Stop for good. Pending acks are flushed and the stream half-closed, giving the edge up to
   * `graceMs` to end it cleanly; then everything is cancelled.
   */
  async close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    if (this._closed) {
      await this.loop;
      return;
    }
    this._closed = true;
    this.closing = true;
    const loop = this.loop;
    if (loop !== null && !this.stopped) {
      const session = this.current;
      if (session !== null && graceMs > 0) {
        this.flushAcks(session);
        session.halfClosed = true;
        try {
          session.call.end();
        } catch {
          // already ended
        }
        let timer: Timer | undefined;
        await Promise.race([loop, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
        clearTimeout(timer);
      }
      this.attempt?.finish({ error: new PushError(status.CANCELLED, "client is closed") });
      this.wakeSleep();
      await loop;
    }
    this._connected = false;
    this.stopped = true;
    this.wake();
    this.log.info?.(`closed ${this.fields()}`);
  }

  // -- connection loop ------------------------------------------------------------------

  private ensureStarted(): void {
    if (this.loop === null && !this._closed) {
      this.loop = this.run();
    }
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const w of wakers) w();
  }

  private async run(): Promise<void> {
    try {
      while (!this.closing) {
        let delay: number;
        let outcome: Outcome;
        try {
          outcome = await this.session();
        } catch (err) {
          // A bug in the client, not a network problem: surface it rather than spin.
          this.log.error?.(`client loop crashed ${this.fields()}: ${String(err)}`);
          throw new PushError(status.UNKNOWN, `client loop crashed: ${String(err)}`, { cause: err });
        }
        if (this.closing) return;
        if ("error" in outcome) {
          const err = outcome.error;
          if (!err.retriable || !this.reconnect) throw err;
          delay = this.backoff.nextDelay();
          // The server knows its load better than our backoff does.
          if (err.retryAfterMs !== undefined) delay = Math.max(delay, err.retryAfterMs);
          this.log.warn?.(
            `connection lost code=${statusName(err.code)} details=${JSON.stringify(err.details)} retry_in=${Math.round(delay)}ms ${this.fields()}`,
          );
        } else {
          if (!this.reconnect) return;
          if (outcome.goAwayDelayMs === null) {
            delay = this.backoff.nextDelay();
            this.log.info?.(`stream ended by edge retry_in=${Math.round(delay)}ms ${this.fields()}`);
          } else {
            // A GoAway is planned (deploy, max age), not a failure: use the edge's
            // already-jittered delay and leave the backoff alone.
            delay = outcome.goAwayDelayMs;
            this.log.info?.(`reconnecting after GoAway in=${delay}ms ${this.fields()}`);
          }
        }
        await this.sleep(delay);
      }
    } catch (err) {
      const error = err instanceof PushError ? err : new PushError(status.UNKNOWN, String(err), { cause: err });
      this.error = error;
      this.log[error.retriable ? "warn" : "error"]?.(
        `stopped code=${statusName(error.code)} details=${JSON.stringify(error.details)} ${this.fields()}`,
      );
    } finally {
      this._connected = false;
      this.stopped = true;
      this.wake();
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.closing) return Promise.resolve();
    return new Promise((resolve) => {
      this.sleepDone = resolve;
      this.sleepTimer = setTimeout(resolve, ms);
    });
  }

  private wakeSleep(): void {
    clearTimeout(this.sleepTimer);
    this.sleepDone?.();
  }

  /** One connection. Resolves with the GoAway delay (ms), null if the edge ended the stream
   * cleanly, or the PushError it failed with. Never rejects. */
  private session(): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      let welcomed = false;
      let finished = false;
      let lastRx = performance.now();
      let heartbeat: Timer | undefined;
      // Set once the transport has opened the connection, below; its events come later.
      let session: Session | undefined;

      const finish = (outcome: Outcome): void => {
        if (finished || session === undefined) return;
        finished = true;
        clearTimeout(connectTimer);
        clearTimeout(heartbeat);
        clearTimeout(session.flushTimer);
        if (this.current === session) this.current = null;
        if (this.attempt === session) this.attempt = null;
        this.topics.failAll();
        if (welcomed) this._connected = false;
        // Acks written but not known to be delivered: keep them for the next stream.
        for (const ids of session.inflight) this.restoreAcks(ids);
        session.inflight.clear();
        session.call.cancel();
        this.wake();
        resolve(outcome);
      };
      const connectTimer = setTimeout(() => {
        finish({
          error: new PushError(
            status.DEADLINE_EXCEEDED,
            `no Welcome from ${this.edge} within ${this.connectTimeoutMs} ms`,
          ),
        });
      }, this.connectTimeoutMs);

      const beat = (interval: number, nextPing: number): void => {
        const now = performance.now();
        const deadline = lastRx + MISSED_HEARTBEATS * interval;
        if (now >= deadline) {
          finish({
            error: new PushError(
              status.DEADLINE_EXCEEDED,
              `no frame from the edge for ${MISSED_HEARTBEATS * interval} ms`,
            ),
          });
          return;
        }
        if (now >= nextPing) {
          session?.write({ ping: {} });
          nextPing = Math.max(nextPing + interval, now);
        }
        heartbeat = setTimeout(() => beat(interval, nextPing), Math.max(0, Math.min(nextPing, deadline) - now));
      };

      const onFrame = (frame: ServerFrameOf<M>): void => {
        lastRx = performance.now();
        if (finished) {
          // Messages that arrived just before a failure are still handed over.
          if (frame.pushes && welcomed) this.onPushes(frame.pushes.messages);
          return;
        }
        if (!welcomed) {
          if (frame.goAway) {
            // A draining edge may turn us away before welcoming us; that is still a plan.
            finish({ goAwayDelayMs: this.onGoAway(frame.goAway) });
          } else if (frame.welcome) {
            welcomed = true;
            clearTimeout(connectTimer);
            const interval = this.onWelcome(frame.welcome, session as Session);
            if (this.needsReconnectFor(frame.welcome.maxFrameBytes)) {
              // The edge would resend the same too-large frame after every reconnect on this
              // connection's limit: reconnect at once with the larger one.
              finish({ goAwayDelayMs: 0 });
              return;
            }
            beat(interval, performance.now() + interval);
          } else {
            finish({ error: new PushError(status.INTERNAL, `edge sent ${frameKind(frame)} before Welcome`) });
          }
          return;
        }
        if (frame.pushes) {
          this.onPushes(frame.pushes.messages);
        } else if (frame.goAway) {
          finish({ goAwayDelayMs: this.onGoAway(frame.goAway) });
        } else if (frame.pong) {
          this.log.debug?.(`pong ${this.fields()}`);
        } else if (frame.subscription) {
          this.topics.answered(frame.subscription);
        } else {
          // A newer edge may send frames we do not know; they still prove liveness.
          this.log.debug?.(`ignored frame kind=${frameKind(frame)} ${this.fields()}`);
        }
      };

      this.log.debug?.(`connecting edge=${this.edge} ${this.fields()}`);
      session = new Session(
        this.transport.open({
          frame: onFrame,
          end: (error) => finish(error === null ? { goAwayDelayMs: null } : { error }),
        }),
      );
      session.finish = finish;
      this.attempt = session;
      session.write({ hello: this.hello });
    });
  }

  private onWelcome(welcome: Welcome, session: Session): number {
    this._sessionId = welcome.sessionId;
    this._edgeId = welcome.edgeId;
    this._connects += 1;
    this.backoff.reset();
    this.current = session;
    this._connected = true;
    let interval: number;
    if (this.heartbeatIntervalMs !== undefined) interval = this.heartbeatIntervalMs;
    else if (welcome.heartbeatIntervalMs > 0) interval = welcome.heartbeatIntervalMs;
    else interval = DEFAULT_HEARTBEAT_INTERVAL_MS;
    if (this.pendingAcks.size > 0) this.kickFlush();
    this.log.info?.(
      `connected edge=${this._edgeId} heartbeat=${interval}ms connects=${this._connects} ${this.fields()}`,
    );
    this.wake();
    return interval;
  }

  private needsReconnectFor(maxFrameBytes: number): boolean {
    const note = this.transport.acceptFrames?.(maxFrameBytes) ?? null;
    if (note === null) return false;
    const text = `edge frames may be up to ${maxFrameBytes} bytes, ${note.detail} ${this.fields()}`;
    if (note.reconnect) this.log.info?.(text);
    else this.log.warn?.(text);
    return note.reconnect;
  }

  private onGoAway(goAway: GoAway): number {
    this._lastGoAway = goAway;
    this.log.info?.(
      `go_away reason=${GOAWAY_REASONS[goAway.reason] ?? goAway.reason} reconnect_after_ms=${goAway.reconnectAfterMs} detail=${JSON.stringify(goAway.detail)} ${this.fields()}`,
    );
    return Math.max(goAway.reconnectAfterMs, 0);
  }

  private onPushes(messages: M[]): void {
    let handed = 0;
    for (const message of messages) {
      const id = message.messageId;
      if (id && this.seen.seen(id)) {
        // Already handed over. Re-ack only if the app acked the original; otherwise its own
        // (pending) ack covers this copy too.
        if (this.acked.has(id)) this.queueAcks([id]);
        this.log.debug?.(`duplicate message_id=${id} ${this.fields()}`);
        continue;
      }
      this.queue.push(message);
      handed += 1;
    }
    this.log.debug?.(`pushes count=${messages.length} new=${handed} ${this.fields()}`);
    if (handed > 0) this.wake();
  }

  // -- acks -----------------------------------------------------------------------------

  private recordAcks(messageIds: Iterable<string>): void {
    const ids: string[] = [];
    for (const id of messageIds) {
      if (!id) continue;
      this.acked.add(id);
      ids.push(id);
    }
    this.queueAcks(ids);
  }

  private queueAcks(ids: string[]): void {
    if (ids.length === 0) return;
    for (const id of ids) this.pendingAcks.add(id);
    this.kickFlush();
  }

  private kickFlush(): void {
    // One flush at a time per stream; it collects every id added before it runs.
    const session = this.current;
    if (session === null) return;
    if (session.flushQueued) {
      // Linger for company, but no longer than it takes MAX_ACK_IDS acks to gather.
      if (this.pendingAcks.size >= MAX_ACK_IDS) this.flushAcks(session);
      return;
    }
    session.flushQueued = true;
    const now = this.closing || this.pendingAcks.size >= MAX_ACK_IDS;
    session.flushTimer = setTimeout(() => this.flushAcks(session), now ? 0 : ACK_LINGER_MS);
  }

  private flushAcks(session: Session): void {
    clearTimeout(session.flushTimer);
    session.flushQueued = false;
    if (this.pendingAcks.size === 0 || session.halfClosed) return;
    const all = [...this.pendingAcks];
    this.pendingAcks.clear();
    // The edge ends a stream whose Ack frame carries more than MAX_ACK_IDS ids.
    for (let start = 0; start < all.length; start += MAX_ACK_IDS) {
      const ids = all.slice(start, start + MAX_ACK_IDS);
      session.inflight.add(ids);
      const written = session.write({ ack: { messageIds: ids } }, (error) => {
        if (!session.inflight.delete(ids)) return; // the session ended first and restored them
        if (error) this.restoreAcks(ids);
        else this.log.debug?.(`acked count=${ids.length} ${this.fields()}`);
      });
      if (!written) {
        session.inflight.delete(ids);
        this.restoreAcks(all.slice(start));
        return;
      }
    }
  }

  private restoreAcks(ids: string[]): void {
    // Acks are idempotent: sending one twice is harmless, losing one is not.
    this.pendingAcks = new Set([...ids, ...this.pendingAcks]);
  }

  private fields(): string {
    return `device=${this.deviceLabel} session=${this._sessionId || "-"}`;
  }
}

function frameKind(frame: ServerFrameOf<unknown>): string {
  if (frame.welcome) return "welcome";
  if (frame.pushes) return "pushes";
  if (frame.goAway) return "go_away";
  if (frame.pong) return "pong";
  return "an empty frame";
}
