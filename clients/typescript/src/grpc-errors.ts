/** grpc-js errors as PushErrors (the Node build only). */

import type { Metadata, ServiceError } from "@grpc/grpc-js";

import { AuthError, PushError, RETRY_AFTER_KEY } from "./errors";
import { Status as status } from "./status";

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
  const code = typeof e?.code === "number" ? e.code : status.UNKNOWN;
  const details = typeof e?.details === "string" ? e.details : String((err as Error)?.message ?? err);
  const options = { retryAfterMs: retryAfterFromMetadata(e?.metadata), cause: err };
  return code === status.UNAUTHENTICATED ? new AuthError(details, options) : new PushError(code, details, options);
}
