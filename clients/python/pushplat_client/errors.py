"""Errors raised to the application, and which gRPC statuses are worth retrying."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

__all__ = [
    "NON_RETRIABLE",
    "AuthError",
    "PushError",
    "error_from_rpc",
    "is_retriable",
    "retry_after_from_metadata",
]

# Retrying these cannot help: the request or the credentials are wrong (or, ALREADY_EXISTS, an
# idempotency key was reused for another request), or the server does not speak this API.
# Everything else (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is transient.
NON_RETRIABLE: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)

RETRY_AFTER_KEY = "retry-after-ms"


def is_retriable(code: grpc.StatusCode) -> bool:
    return code not in NON_RETRIABLE


class PushError(Exception):
    """A failed call or stream, with its gRPC status code and the server's explanation."""

    def __init__(self, code: grpc.StatusCode, details: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details
        # Seconds the server asked us to wait (trailing metadata "retry-after-ms"), if any.
        self.retry_after = retry_after

    @property
    def retriable(self) -> bool:
        return is_retriable(self.code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.details!r})"


class AuthError(PushError):
    """The server rejected the token or API key (UNAUTHENTICATED)."""


def retry_after_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The ``retry-after-ms`` hint from trailing metadata, in seconds; None if absent or bad."""
    for key, value in metadata or ():
        if key.lower() != RETRY_AFTER_KEY:
            continue
        try:
            ms = float(value.decode() if isinstance(value, bytes) else value)
        except ValueError:
            return None
        return max(ms, 0.0) / 1000.0
    return None


def error_from_rpc(err: grpc.RpcError) -> PushError:
    """Convert a gRPC error (sync or aio) into a PushError / AuthError."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    trailers_fn = getattr(err, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else "") or ""
    retry_after = retry_after_from_metadata(trailers_fn() if callable(trailers_fn) else None)
    cls = AuthError if code == grpc.StatusCode.UNAUTHENTICATED else PushError
    exc = cls(code or grpc.StatusCode.UNKNOWN, details, retry_after=retry_after)
    exc.__cause__ = err
    return exc
