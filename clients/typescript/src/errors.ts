/** Errors raised to the application, and which gRPC statuses are worth retrying. */

import { type Metadata, type ServiceError, status } from "@grpc/grpc-js";

/** Trailing-metadata key in which a server asks for a minimum delay (ms) before a retry. */
export const RETRY_AFTER_KEY = "retry-after-ms";

/**
 * Retrying these cannot help: the request or the credentials are wrong, or the server does
 * not speak this API. Everything else (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is transient.
 */
export const NON_RETRIABLE: ReadonlySet<status> = new Set([
  status.UNAUTHENTICATED,
  status.INVALID_ARGUMENT,
  status.PERMISSION_DENIED,
  status.UNIMPLEMENTED,
  // An idempotency key reused for another request: retrying the same request cannot help.
  status.ALREADY_EXISTS,
]);

export function isRetriable(code: status): boolean {
  return !NON_RETRIABLE.has(code);
}

export function statusName(code: status): string {
  return status[code] ?? `UNKNOWN(${code})`;
}

/** A failed call or stream, with its gRPC status code and the server's explanation. */
export class PushError extends Error {
  readonly code: status;
  readonly details: string;
  /** Milliseconds the server asked us to wait (trailer "retry-after-ms"), if any. */
  readonly retryAfterMs: number | undefined;

  constructor(code: status, details = "", options: { retryAfterMs?: number; cause?: unknown } = {}) {
    super(details ? `${statusName(code)}: ${details}` : statusName(code), { cause: options.cause });
    this.name = "PushError";
    this.code = code;
    this.details = details;
    this.retryAfterMs = options.retryAfterMs;
  }

  get retriable(): boolean {
    return isRetriable(this.code);
  }
}

/** The server rejected the token or API key (UNAUTHENTICATED). */
export class AuthError extends PushError {
  constructor(details = "", options: { retryAfterMs?: number; cause?: unknown } = {}) {
    super(status.UNAUTHENTICATED, details, options);
    this.name = "AuthError";
  }
}

/** waitConnected gave up before the edge welcomed the client. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

/** The "retry-after-ms" hint from trailing metadata, in ms; undefined if absent or bad. */
export function retryAfterFromMetadata(metadata: Metadata | undefined): number | undefined {
  const values = metadata?.get(RETRY_AFTER_KEY) ?? [];
  if (values.length === 0) return undefined;
  const ms = Number(values[0].toString().trim());
  if (!Number.isFinite(ms)) return undefined;
  return Math.max(ms, 0);
}

/** Convert a gRPC error into a PushError / AuthError. */
export function errorFromGrpc(err: unknown): PushError {
  if (err instanceof PushError) return err;
  const e = err as Partial<ServiceError>;
  const code = typeof e?.code === "number" ? (e.code as status) : status.UNKNOWN;
  const details = typeof e?.details === "string" ? e.details : String((err as Error)?.message ?? err);
  const options = { retryAfterMs: retryAfterFromMetadata(e?.metadata), cause: err };
  return code === status.UNAUTHENTICATED ? new AuthError(details, options) : new PushError(code, details, options);
}
