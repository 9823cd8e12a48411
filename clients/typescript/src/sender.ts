/** PushSender: the backend side, `Push.Send` / `Push.SendBatch` / `Push.SendStream`. */

import {
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";

import { errorFromGrpc } from "./grpc-errors";
import {
  type GetSubscriptionsRequest,
  type GetSubscriptionsResponse,
  PushClient as PushStub,
  type SendRequest,
  type SendResponse,
  type SubscribeRequest,
  type SubscribeResponse,
} from "./gen/pushplat/v1/push";
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

  /**
   * Subscribe devices (by id, and every known device of each user) to topics: at most 100
   * topics and 1,000 devices per call. Per device, what was applied and what was refused.
   */
  subscribe(request: Partial<SubscribeRequest>): Promise<SubscribeResponse> {
    return this.unary((r, md, o, cb) => this.stub.subscribe(r, md, o, cb), subscribeRequest(request));
  }

  /** The reverse of {@link subscribe}. */
  unsubscribe(request: Partial<SubscribeRequest>): Promise<SubscribeResponse> {
    return this.unary((r, md, o, cb) => this.stub.unsubscribe(r, md, o, cb), subscribeRequest(request));
  }

  /** The topics one device is subscribed to, sorted. */
  async getSubscriptions(deviceId: string): Promise<string[]> {
    const reply = await this.unary<GetSubscriptionsRequest, GetSubscriptionsResponse>(
      (r, md, o, cb) => this.stub.getSubscriptions(r, md, o, cb),
      { deviceId },
    );
    return reply.topics;
  }

  private unary<Q, R>(
    call: (request: Q, md: Metadata, options: CallOptions, callback: (err: ServiceError | null, response: R) => void) => unknown,
    request: Q,
  ): Promise<R> {
    return new Promise((resolve, reject) => {
      call(request, this.metadata(), { deadline: Date.now() + this.timeoutMs }, (err, response) =>
        err ? reject(errorFromGrpc(err)) : resolve(response),
      );
    });
  }

  close(): void {
    this.stub.close();
  }

  toString(): string {
    return `PushSender(api=${this.api}, api_key=${this.apiKey ? "set" : "none"})`;
  }
}

function subscribeRequest(request: Partial<SubscribeRequest>): SubscribeRequest {
  return { deviceIds: request.deviceIds ?? [], userIds: request.userIds ?? [], topics: request.topics ?? [] };
}
