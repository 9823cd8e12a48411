/**
 * pushplat client SDK for browsers: the same {@link PushClient} API as the Node build, over the
 * browser's WebSocket instead of gRPC (no grpc-js). Bundled by esbuild into one ES module,
 * dist/browser/pushplat.js. Devices only: a sender's API key does not belong in a web page.
 *
 * ```js
 * import { PushClient } from "./pushplat.js";
 * const client = new PushClient("wss://push.example.com/connect", { token });
 * for await (const message of client) show(message);
 * ```
 */

import { type ClientOptions, ClientCore } from "../core";
import type { Message } from "../gen-web/pushplat/v1/message";
import { VERSION } from "../version";
import { type WebSocketConstructor, WebSocketTransport } from "./websocket";

export { Backoff, type BackoffPolicy } from "../backoff";
export { ACK_LINGER_MS, type ClientOptions, MISSED_HEARTBEATS } from "../core";
export { RecentIds } from "../dedup";
export { AuthError, PushError, TimeoutError, isRetriable, statusName } from "../errors";
export { GoAway_Reason } from "../gen-web/pushplat/v1/edge";
export { type Message, Priority } from "../gen-web/pushplat/v1/message";
export { type Logger } from "../logger";
export { Status } from "../status";
export { VERSION } from "../version";
export {
  RETRY_AFTER_PREFIX,
  STATUS_CLOSE_BASE,
  SUBPROTOCOL,
  type WebSocketConstructor,
  type WebSocketLike,
  WebSocketTransport,
  errorFromClose,
} from "./websocket";

export interface BrowserPushClientOptions extends ClientOptions {
  /** The WebSocket class (default: the global one; in Node, e.g. the `ws` package's). */
  WebSocket?: WebSocketConstructor;
}

/** "high", "normal" or "low" for a Message's priority (unspecified reads as normal). */
export function priorityName(value: number): string {
  return ["normal", "low", "normal", "high"][value] ?? `unknown(${value})`;
}

/**
 * Holds a WebSocket to an edge and yields the messages pushed to this device. Give one URL
 * (`ws://host:port/connect`, `wss://` with TLS) or several: each attempt takes the next, so a
 * tab whose edge drains reconnects to another one after the GoAway's delay.
 */
export class PushClient extends ClientCore<Message> {
  constructor(url: string | string[], options: BrowserPushClientOptions = {}) {
    const urls = (Array.isArray(url) ? url : [url]).map((u) => u.trim()).filter((u) => u);
    if (urls.length === 0) throw new TypeError("PushClient needs the edge's URL, e.g. 'ws://127.0.0.1:50054/connect'");
    for (const u of urls) {
      if (!/^wss?:\/\//i.test(u)) throw new TypeError(`PushClient needs ws:// or wss:// URLs, got ${JSON.stringify(u)}`);
    }
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (impl === undefined) {
      throw new TypeError("no WebSocket in this environment: pass options.WebSocket (e.g. the `ws` package in Node)");
    }
    super(new WebSocketTransport(urls, impl), options, `pushplat-browser/${VERSION}`);
  }
}
