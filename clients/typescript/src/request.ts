/** Building a SendRequest: shared by PushSender and SendStream. */

import { DeliveryMode } from "./gen/pushplat/v1/message";
import { type SendRequest } from "./gen/pushplat/v1/push";
import { type PriorityLike, parsePriority } from "./priority";

/** One message. Give exactly one of `userId` (every device of the user), `deviceId` or `topic`. */
export interface SendOptions {
  userId?: string;
  deviceId?: string;
  /** Every device subscribed to this topic that is connected when it reaches its edge (at-most-once). */
  topic?: string;
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

/** Build a SendRequest, checking what the server would reject locally (the target). */
export function makeRequest(options: SendOptions): SendRequest {
  // The target is a oneof: setting both would silently keep only one of them.
  if ([options.userId, options.deviceId, options.topic].filter(Boolean).length !== 1) {
    throw new TypeError("give exactly one of userId, deviceId or topic");
  }
  const payload = options.payload ?? new Uint8Array();
  return {
    userId: options.userId || undefined,
    deviceId: options.deviceId || undefined,
    topic: options.topic || undefined,
    payload: typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload),
    contentType: options.contentType ?? "",
    priority: parsePriority(options.priority ?? "normal"),
    ttlSeconds: options.ttlSeconds ?? 0,
    collapseKey: options.collapseKey ?? "",
    idempotencyKey: options.idempotencyKey ?? "",
    delivery: options.atLeastOnce ? DeliveryMode.AT_LEAST_ONCE : DeliveryMode.AT_MOST_ONCE,
    labels: { ...(options.labels ?? {}) },
    requestId: "",
  };
}

/** Whether a value is already a SendRequest (rather than SendOptions). */
export function isSendRequest(value: SendOptions | SendRequest): value is SendRequest {
  return Buffer.isBuffer((value as SendRequest).payload) && typeof (value as SendRequest).delivery === "number";
}

/** A SendRequest from either form. */
export function toRequest(message: SendOptions | SendRequest): SendRequest {
  return isSendRequest(message) ? message : makeRequest(message);
}
