/** PushSender: the backend side, `Push.Send` / `Push.SendBatch`. */

import {
  type ChannelCredentials,
  type ChannelOptions,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";

import { errorFromGrpc } from "./grpc-errors";
import { DeliveryMode } from "./gen/pushplat/v1/message";
import { PushClient as PushStub, type SendRequest, type SendResponse } from "./gen/pushplat/v1/push";
import { type PriorityLike, parsePriority } from "./priority";
import { type TlsOptions, tlsChannel } from "./tls";

export const DEFAULT_SEND_TIMEOUT_MS = 10_000;

/** One message. Give exactly one of `userId` (every device of the user) or `deviceId`. */
export interface SendOptions {
  userId?: string;
  deviceId?: string;
  /** Bytes, or a string (sent as UTF-8). */
  payload?: Uint8Array | string;
  contentType?: string;
  /** "high", "normal" (default) or "low", or the Priority enum. */
  priority?: PriorityLike;
  /** Seconds the message stays deliverable; 0 means the server default. */
  ttlSeconds?: number;
  /** A newer message with the same key replaces an older one. */
  collapseKey?: string;
  /** A repeated send with the same key returns the first messageId with duplicate = true. */
  idempotencyKey?: string;
  /** Keep the message in the device's inbox until it acks (or the TTL ends). */
  atLeastOnce?: boolean;
  labels?: Record<string, string>;
}

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

/** Build a SendRequest, checking what the server would reject locally (the target). */
export function makeRequest(options: SendOptions): SendRequest {
  // The target is a oneof: setting both would silently keep only one of them.
  if (Boolean(options.userId) === Boolean(options.deviceId)) {
    throw new TypeError("give exactly one of userId or deviceId");
  }
  const payload = options.payload ?? new Uint8Array();
  return {
    userId: options.userId || undefined,
    deviceId: options.userId ? undefined : options.deviceId,
    payload: typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload),
    contentType: options.contentType ?? "",
    priority: parsePriority(options.priority ?? "normal"),
    ttlSeconds: options.ttlSeconds ?? 0,
    collapseKey: options.collapseKey ?? "",
    idempotencyKey: options.idempotencyKey ?? "",
    delivery: options.atLeastOnce ? DeliveryMode.AT_LEAST_ONCE : DeliveryMode.AT_MOST_ONCE,
    labels: { ...(options.labels ?? {}) },
  };
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
    const requests = messages.map((m) => (isSendRequest(m) ? m : makeRequest(m)));
    return new Promise((resolve, reject) => {
      this.stub.sendBatch(
        { requests },
        this.metadata(),
        { deadline: Date.now() + this.timeoutMs },
        (err, response) => (err ? reject(errorFromGrpc(err)) : resolve(response.responses)),
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

function isSendRequest(value: SendOptions | SendRequest): value is SendRequest {
  return Buffer.isBuffer((value as SendRequest).payload) && typeof (value as SendRequest).delivery === "number";
}
