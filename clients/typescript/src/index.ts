/**
 * pushplat client SDK for Node.js: {@link PushClient} for devices, {@link PushSender} for
 * backends. Mirrors the Python SDK (clients/python/pushplat_client).
 */

export { Backoff, type BackoffPolicy, DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_CAP_MS } from "./backoff";
export {
  ACK_LINGER_MS,
  DEFAULT_CLOSE_GRACE_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_RECEIVE_LIMIT,
  MAX_ACK_IDS,
  MISSED_HEARTBEATS,
  PushClient,
  type PushClientOptions,
} from "./client";
export {
  ClientCore,
  type ClientOptions,
  type Connection,
  type ConnectionEvents,
  type FrameLimitNote,
  type ServerFrameOf,
  type Transport,
} from "./core";
export { DEFAULT_DEDUP_CAPACITY, RecentIds } from "./dedup";
export {
  AuthError,
  NON_RETRIABLE,
  PushError,
  RETRY_AFTER_KEY,
  TimeoutError,
  isRetriable,
  statusName,
} from "./errors";
export { errorFromGrpc, retryAfterFromMetadata } from "./grpc-errors";
export { Status } from "./status";
export { type Logger, silentLogger } from "./logger";
export { Priority, type PriorityLike, parsePriority, priorityName } from "./priority";
export { DEFAULT_SEND_TIMEOUT_MS, PushSender, type PushSenderOptions, type SendOptions, makeRequest } from "./sender";
export { DEFAULT_STREAM_WINDOW, SendStream, type SendStreamOptions } from "./stream";
export { type TlsOptions, tlsChannel } from "./tls";
export { MAX_TOPICS_PER_REQUEST } from "./topics";
export { VERSION } from "./version";

// The generated wire types, for applications that need more than the message.
export { DeliveryMode, type Message } from "./gen/pushplat/v1/message";
export { GoAway, GoAway_Reason, type SubscriptionResult, type Welcome } from "./gen/pushplat/v1/edge";
export {
  type SendError,
  type SendRequest,
  type SendResponse,
  type SubscribeRequest,
  type SubscribeResponse,
} from "./gen/pushplat/v1/push";
export * as edgeProto from "./gen/pushplat/v1/edge";
export * as messageProto from "./gen/pushplat/v1/message";
export * as pushProto from "./gen/pushplat/v1/push";
