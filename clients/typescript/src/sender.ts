/** PushSender: the backend side, `Push.Send` / `Push.SendBatch` / `Push.SendStream`. */

import {
  type ChannelCredentials,
  type ChannelOptions,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";

import { errorFromGrpc } from "./grpc-errors";
import { PushClient as PushStub, type SendRequest, type SendResponse } from "./gen/pushplat/v1/push";
import { type SendOptions, makeRequest, toRequest } from "./request";
import { SendStream, type SendStreamOptions } from "./stream";
import { type TlsOptions, tlsChannel } from "./tls";

export { type SendOptions, makeRequest } from "./request";

export const DEFAULT_SEND_TIMEOUT_MS = 10_000;

export interface PushSenderOptions {
  /** Sent as `authorization: Bearer <apiKey>` on every call. */
  apiKey?: string;
  /** gRPC deadline of each call (default 10 s); the server sees it and stops work past it. */
  timeoutMs?: number;
  /** Connect over TLS (`true`: default roots; see {@link TlsOptions}). Default: plaintext. */
  tls?: TlsOptions | boolean;
  /** Raw grpc-js credentials, instead of `tls`. Default: insecure (plaintext) credentials. */
  credentials?: ChannelCredentials;
  channelOptions?: Partial<ChannelOptions>;
}

/**
 * Sends messages through the api's `Push` service.
 *
 * ```ts
 * const sender = new PushSender("127.0.0.1:50052", { apiKey });
 * const { messageId } = await sender.send({ userId: "u1", payload: "hi", priority: "high" });
 * sender.close();
 * ```
 *
 * A send resolves once the message is enqueued (fire-and-forget). gRPC failures reject with
 * {@link PushError} ({@link AuthError} for a bad key); the sender does not retry, since only
 * the caller knows whether a retry is safe (use `idempotencyKey` to make it so).
 */
export class PushSender {
  private readonly api: string;
  private readonly stub: PushStub;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;

  constructor(api: string, options: PushSenderOptions = {}) {
    if (!api) throw new TypeError("PushSender needs the api address, e.g. '127.0.0.1:50052'");
    this.api = api;
    this.apiKey = options.apiKey || undefined;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_SEND_TIMEOUT_MS;
    const channel = tlsChannel(options.tls, options.credentials);
    this.stub = new PushStub(api, channel.credentials, { ...channel.options, ...options.channelOptions });
  }

  private metadata(): Metadata {
    const md = new Metadata();
    if (this.apiKey) md.set("authorization", `Bearer ${this.apiKey}`);
    return md;
  }

  /** Send one message to a user (all their devices) or one device. */
  send(options: SendOptions): Promise<SendResponse> {
    const request = makeRequest(options);
    return new Promise((resolve, reject) => {
      this.stub.send(
        request,
        this.metadata(),
        { deadline: Date.now() + this.timeoutMs },
        (err: ServiceError | null, response: SendResponse) => (err ? reject(errorFromGrpc(err)) : resolve(response)),
      );
    });
  }

  /** Send many messages in one call; all are enqueued or the call fails. Responses are in order. */
  sendBatch(messages: Array<SendOptions | SendRequest>): Promise<SendResponse[]> {
    const requests = messages.map(toRequest);
    return new Promise((resolve, reject) => {
      this.stub.sendBatch(
        { requests },
        this.metadata(),
        { deadline: Date.now() + this.timeoutMs },
        (err, response) => (err ? reject(errorFromGrpc(err)) : resolve(response.responses)),
      );
    });
  }

  /**
   * A {@link SendStream}: many sends over one `Push.SendStream` call, with at most
   * `options.window` (256) unanswered at once.
   */
  stream(options: SendStreamOptions = {}): SendStream {
    return new SendStream(this.stub, this.metadata(), options);
  }

  close(): void {
    this.stub.close();
  }

  toString(): string {
    return `PushSender(api=${this.api}, api_key=${this.apiKey ? "set" : "none"})`;
  }
}
