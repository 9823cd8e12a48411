"""Authentication between pushplat roles on the delivery port (Delivery.Deliver and Evict).

Two mechanisms, usable together:

- a shared secret (``--internal-secret``): callers send it as metadata, the edge compares it
  in constant time and answers UNAUTHENTICATED without it. Several secrets may be given for
  rotation: the first is sent, any is accepted.
- mutual TLS (``--internal-tls-cert/--internal-tls-key/--internal-ca``): the delivery port
  serves TLS and accepts only clients whose certificate the internal CA signed; callers check
  the edge's certificate against the same CA. A caller without one does not get past the
  handshake.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from pushplat.config import Config
from pushplat.logs import LogLimiter, kv
from pushplat.metrics import INTERNAL_AUTH_REFUSED
from pushplat.tls import CertificateError, KeyPair, load_ca, load_key_pair, server_credentials

log = logging.getLogger("pushplat.internal_auth")

METADATA_KEY = "pushplat-internal-secret"
# Probes and balancers may ask whether an edge's delivery port is up without credentials.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
# Shorter than this is guessable; the same floor as RFC 7518 asks of HS256 keys.
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class InternalAuth:
    secrets: tuple[bytes, ...] = ()
    key_pair: KeyPair | None = None
    ca: bytes | None = None
    server_name: str = ""
    _limiter: LogLimiter = field(default_factory=lambda: LogLimiter(10.0), compare=False, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> InternalAuth:
        """Reads and checks the files; CertificateError says which option is wrong."""
        files = {
            "--internal-tls-cert": config.internal_tls_cert,
            "--internal-tls-key": config.internal_tls_key,
            "--internal-ca": config.internal_ca,
        }
        pair, ca = None, None
        if any(files.values()):
            if not all(files.values()):
                missing = " and ".join(flag for flag, value in files.items() if not value)
                raise CertificateError(f"internal mutual TLS needs {', '.join(files)} together; missing {missing}")
            pair = load_key_pair(
                config.internal_tls_cert, config.internal_tls_key, "--internal-tls-cert", "--internal-tls-key"
            )
            ca = load_ca(config.internal_ca, "--internal-ca")
        secrets = tuple(s.encode() for s in config.internal_secrets if s)
        return cls(secrets, pair, ca, config.internal_tls_server_name)

    @property
    def enabled(self) -> bool:
        return bool(self.secrets) or self.key_pair is not None

    @property
    def weak_secret(self) -> bool:
        return any(len(s) < MIN_SECRET_BYTES for s in self.secrets)

    @property
    def mechanisms(self) -> str:
        names = (["mtls"] if self.key_pair else []) + (["secret"] if self.secrets else [])
        return "+".join(names) or "none"

    # -- the edge's side (server) ------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.key_pair is None:
            return None
        return server_credentials(self.key_pair, client_ca=self.ca)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [SecretInterceptor(self.secrets, self._limiter)] if self.secrets else []

    # -- the caller's side (routers, and edges evicting on other edges) -----------------

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.key_pair is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.key_pair.private_key,
            certificate_chain=self.key_pair.cert_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        # Edges are dialled by the address they publish (often a pod IP); their certificates
        # may name a service instead.
        return [("grpc.ssl_target_name_override", self.server_name)] if self.key_pair and self.server_name else []

    @property
    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((METADATA_KEY, self.secrets[0].decode()),) if self.secrets else ()


def secret_matches(known: Sequence[bytes], given: bytes) -> bool:
    """Compares against every known secret in constant time, so timing reveals neither a
    prefix match nor which secret matched."""
    ok = False
    for secret in known:
        ok |= hmac.compare_digest(secret, given)
    return ok


class SecretInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call on the delivery port (bar health checks) that lacks the secret, before
    its request is even parsed, so an unauthenticated call changes nothing."""

    def __init__(self, secrets: Sequence[bytes], limiter: LogLimiter) -> None:
        self._secrets = tuple(secrets)
        self._limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in OPEN_METHODS or self._authorized(details.invocation_metadata):
            return await continuation(details)
        handler = await continuation(details)
        return _refusal(handler, details.method, self._limiter)

    def _authorized(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == METADATA_KEY:
                given = value if isinstance(value, bytes) else value.encode()
                return secret_matches(self._secrets, given)
        return False


def _refusal(handler: grpc.RpcMethodHandler | None, method: str, limiter: LogLimiter) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        INTERNAL_AUTH_REFUSED.inc()
        allowed, suppressed = limiter.allow("refused")
        if allowed:
            log.warning(kv("internal.refused", method=method, peer=context.peer(), suppressed=suppressed or None))
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"the delivery port takes only pushplat roles: send metadata '{METADATA_KEY}' with the internal secret",
        )

    # Same call shape as the real method, but raw bytes in: a refused request is never parsed.
    if handler is None or handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse)
