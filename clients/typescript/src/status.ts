/**
 * gRPC status codes, with the numbers of the gRPC spec. The edge ends a stream with one of
 * them on every transport: as the gRPC status, or as WebSocket close code 4000 + code.
 * Kept here rather than taken from grpc-js so that the browser build has no grpc-js.
 */

export enum Status {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

export function statusName(code: number): string {
  return Status[code] ?? `UNKNOWN(${code})`;
}
