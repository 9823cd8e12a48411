/** Errors raised to the application, and which gRPC statuses are worth retrying. No grpc-js
 * here: the browser build shares this file (grpc-errors.ts converts grpc-js errors). */

import { Status as status, statusName } from "./status";

export { statusName };

/** Trailing-metadata key in which a server asks for a minimum delay (ms) before a retry. */
export const RETRY_AFTER_KEY = "retry-after-ms";

/**
 * Retrying these cannot help: the request or the credentials are wrong, or the server does
 * not speak this API. Everything else (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is transient.
 */
export const NON_RETRIABLE: ReadonlySet<number> = new Set([
  status.UNAUTHENTICATED,
  status.INVALID_ARGUMENT,
  status.PERMISSION_DENIED,
  status.UNIMPLEMENTED,
  // An idempotency key reused for another request: retrying the same request cannot help.
  status.ALREADY_EXISTS,
]);

export function isRetriable(code: number): boolean {
  return !NON_RETRIABLE.has(code);
}

/** A failed call or stream, with its gRPC status code and the server's explanation. */
export class PushError extends Error {
  /** A gRPC status code (see {@link Status}; grpc-js's `status` has the same numbers). */
  readonly code: number;
  readonly details: string;
  /** Milliseconds the server asked us to wait (trailer "retry-after-ms"), if any. */
  readonly retryAfterMs: number | undefined;

  constructor(code: number, details = "", options: { retryAfterMs?: number; cause?: unknown } = {}) {
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
