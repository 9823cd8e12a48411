/** SendStream: many sends over one `Push.SendStream` call, for high-volume backends. */

import { type ClientDuplexStream, type Metadata, status } from "@grpc/grpc-js";

import { AuthError, PushError } from "./errors";
import { errorFromGrpc } from "./grpc-errors";
import { type PushClient as PushStub, type SendError, type SendRequest, type SendResponse } from "./gen/pushplat/v1/push";
import { type SendOptions, toRequest } from "./request";

/** How many requests a stream has unanswered at most by default. */
export const DEFAULT_STREAM_WINDOW = 256;

export interface SendStreamOptions {
  /** The most requests unanswered at once; `send` waits for a free slot beyond it. */
  window?: number;
}

function errorOf(error: SendError): PushError {
  const options = { retryAfterMs: error.retryAfterMs || undefined };
  return error.code === status.UNAUTHENTICATED
    ? new AuthError(error.message, options)
    : new PushError(error.code as status, error.message, options);
}

interface Waiter {
  resolve: (response: SendResponse) => void;
  reject: (error: PushError) => void;
}

/**
 * One `Push.SendStream` call. Each request carries a request id of the stream's choosing and is
 * answered with it, in any order. At most `window` requests are unanswered: `send` waits for a
 * free slot first, so a fast producer cannot queue without bound. A refused request rejects only
 * its own `send` (a {@link PushError} with the code a Send of it alone would get); if the stream
 * ends, every unanswered `send` rejects with that status and the stream is done: open a new one.
 */
export class SendStream {
  readonly window: number;
  private readonly call: ClientDuplexStream<SendRequest, SendResponse>;
  private readonly waiting = new Map<string, Waiter>();
  private readonly queued: Array<() => void> = [];
  private readonly idle: Array<() => void> = [];
  private readonly ready: Promise<void>;
  private readonly ended: Promise<void>;
  private inUse = 0;
  private next = 0;
  private failure: PushError | undefined;
  private closed = false;

  constructor(stub: PushStub, metadata: Metadata, options: SendStreamOptions = {}) {
    const window = options.window ?? DEFAULT_STREAM_WINDOW;
    if (!Number.isInteger(window) || window < 1) throw new RangeError("window must be an integer >= 1");
    this.window = window;
    this.call = stub.sendStream(metadata);
    // Nothing is written before the api accepted the stream (its headers) or refused it.
    this.ready = new Promise((resolve) => {
      this.call.once("metadata", () => resolve());
      this.call.once("error", () => resolve());
    });
    this.ended = new Promise((resolve) => this.call.once("close", () => resolve()));
    this.call.on("data", (response: SendResponse) => {
      const waiter = this.waiting.get(response.requestId);
      if (!waiter) return; // not ours: nothing waits for it
      this.waiting.delete(response.requestId);
      if (response.error && response.error.code) waiter.reject(errorOf(response.error));
      else waiter.resolve(response);
    });
    this.call.on("error", (err) => this.fail(errorFromGrpc(err)));
    this.call.on("end", () =>
      this.fail(
        this.closed
          ? new PushError(status.CANCELLED, "the stream is closed")
          : new PushError(status.UNAVAILABLE, "SendStream ended before every request was answered"),
      ),
    );
  }

  /** Requests written and not answered yet (at most `window`). */
  get unanswered(): number {
    return this.inUse;
  }

  /** Send one message; resolves with its answer once the api enqueued it. */
  async send(message: SendOptions | SendRequest): Promise<SendResponse> {
    const request = toRequest(message);
    await this.acquire();
    try {
      await this.ready;
      if (this.failure) throw this.failure;
      if (this.closed) throw new PushError(status.CANCELLED, "the stream is closed");
      const requestId = String(++this.next);
      const answer = new Promise<SendResponse>((resolve, reject) => this.waiting.set(requestId, { resolve, reject }));
      this.call.write({ ...request, requestId });
      return await answer;
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.inUse < this.window) {
      this.inUse++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queued.push(resolve)); // the slot is handed over in release
  }

  private release(): void {
    const nextInLine = this.queued.shift();
    if (nextInLine) {
      nextInLine();
      return;
    }
    this.inUse--;
    if (this.inUse === 0) for (const resolve of this.idle.splice(0)) resolve();
  }

  private fail(error: PushError): void {
    this.failure ??= error;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
  }

  /** Wait for the answers still due, then end the stream. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.inUse > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    this.call.end();
    await Promise.race([this.ended, new Promise((resolve) => setTimeout(resolve, 5000))]);
  }
}
