/**
 * The WebSocket transport of the browser build: one binary WebSocket message carries one
 * serialized ClientFrame or ServerFrame, under the subprotocol `pushplat.v1`. The edge ends a
 * connection with close code 1000 (done: reconnect after backoff or the GoAway's delay) or
 * 4000 + a gRPC status code, the status message in the close reason (README: "WebSocket").
 */

import type { Connection, ConnectionEvents, Transport } from "../core";
import { AuthError, PushError } from "../errors";
import { ClientFrame, ServerFrame } from "../gen-web/pushplat/v1/edge";
import type { Message } from "../gen-web/pushplat/v1/message";
import { Status } from "../status";

export const SUBPROTOCOL = "pushplat.v1";
/** Close codes 4000..4099 carry a gRPC status: 4000 + code. */
export const STATUS_CLOSE_BASE = 4000;
/** A close reason that starts with this asks for a delay before the next attempt, in ms. */
export const RETRY_AFTER_PREFIX = "retry-after-ms=";

/** What the transport needs of a WebSocket: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols: string | string[]) => WebSocketLike;

const OPEN = 1;

/** The PushError for a close code and reason, or null for a clean end. */
export function errorFromClose(code: number, reason: string, url: string): PushError | null {
  let retryAfterMs: number | undefined;
  let details = reason;
  if (reason.startsWith(RETRY_AFTER_PREFIX)) {
    const match = /^retry-after-ms=(\d+)\s*/.exec(reason);
    if (match) {
      retryAfterMs = Number(match[1]);
      details = reason.slice(match[0].length);
    }
  }
  if (code === 1000 || code === 1001) return null;
  if (code >= STATUS_CLOSE_BASE && code <= STATUS_CLOSE_BASE + Status.UNAUTHENTICATED) {
    const status = code - STATUS_CLOSE_BASE;
    if (status === Status.OK) return null;
    if (status === Status.UNAUTHENTICATED) return new AuthError(details, { retryAfterMs });
    return new PushError(status, details, { retryAfterMs });
  }
  switch (code) {
    case 1002: // protocol error
    case 1003: // unsupported data
    case 1007: // invalid payload data
    case 1008: // policy violation
      return new PushError(Status.INVALID_ARGUMENT, details || `the edge closed with WebSocket code ${code}`);
    case 1009:
      return new PushError(Status.INVALID_ARGUMENT, details || "a message was over the edge's size limit");
    case 1011:
      return new PushError(Status.INTERNAL, details || "the edge hit an internal error");
    default:
      // 1006 among them: the connection failed or dropped without a close frame. A browser
      // hides why (a refused handshake, a wrong Origin, no server): all the same to a retry.
      return new PushError(
        Status.UNAVAILABLE,
        details || `the WebSocket to ${url} closed with code ${code} (connection refused or dropped)`,
      );
  }
}

/** Connects to each of the edges' URLs in turn, starting at a random one. */
export class WebSocketTransport implements Transport<Message> {
  readonly target: string;
  private readonly urls: string[];
  private readonly WebSocketImpl: WebSocketConstructor;
  private next: number;

  constructor(urls: string[], WebSocketImpl: WebSocketConstructor, random: () => number = Math.random) {
    this.urls = urls;
    this.target = urls.join(",");
    this.WebSocketImpl = WebSocketImpl;
    // Tabs of one page spread over the edges instead of all trying the first one first.
    this.next = Math.floor(random() * urls.length);
  }

  open(events: ConnectionEvents<Message>): Connection {
    const url = this.urls[this.next % this.urls.length];
    this.next = (this.next + 1) % this.urls.length;
    let ended = false;
    const waiting: Uint8Array[] = []; // frames written before the socket opened
    const finish = (error: PushError | null): void => {
      if (ended) return;
      ended = true;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
      events.end(error);
    };

    const ws = new this.WebSocketImpl(url, SUBPROTOCOL);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        finish(new PushError(Status.UNIMPLEMENTED, `${url} did not accept the subprotocol ${SUBPROTOCOL}`));
        return;
      }
      for (const bytes of waiting.splice(0)) ws.send(bytes);
    };
    ws.onmessage = (event) => {
      const bytes = binary(event.data);
      if (bytes === null) {
        finish(new PushError(Status.INTERNAL, `${url} sent a text message; ${SUBPROTOCOL} frames are binary`));
        return;
      }
      let frame: ServerFrame;
      try {
        frame = ServerFrame.decode(bytes);
      } catch (err) {
        finish(new PushError(Status.INTERNAL, `malformed ServerFrame from ${url}: ${String(err)}`, { cause: err }));
        return;
      }
      events.frame(frame);
    };
    ws.onclose = (event) => finish(errorFromClose(event.code, event.reason, url));
    ws.onerror = () => {}; // a close event follows, with the code

    return {
      write: (frame, done) => {
        if (ended) return false;
        const bytes = ClientFrame.encode(frame).finish();
        if (ws.readyState === OPEN) ws.send(bytes);
        else waiting.push(bytes);
        // The browser takes the bytes into its send buffer; there is no later confirmation.
        // An ack lost with the connection is harmless: the inbox replays, the client re-acks.
        if (done) queueMicrotask(() => done(null));
        return true;
      },
      // WebSocket has no half-close: a normal close (after the queued frames) ends the session.
      end: () => {
        if (!ended) ws.close(1000, "client closed");
      },
      cancel: () => finish(null),
    };
  }
}

function binary(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}
