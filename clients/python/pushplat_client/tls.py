"""TLS settings for PushClient and PushSender."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = ["TLS", "ChannelFactory"]

PemSource = bytes | str | os.PathLike[str] | None


@dataclass(frozen=True)
class TLS:
    """TLS for a connection to an edge or the api.

    Each of ``ca``, ``cert`` and ``key`` is PEM ``bytes`` or a path (``str`` / ``Path``) to a
    PEM file, read once here::

        TLS()                                   # verify the server against the default roots
        TLS(ca="ca.pem")                        # ... against your own CA
        TLS(ca="ca.pem", cert="me.pem", key="me.key")   # and present a client certificate (mTLS)

    Without ``ca`` the server is checked against gRPC's default roots: the file named by
    ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` if set, otherwise the system's trust store or gRPC's
    bundled Mozilla roots. ``server_name`` overrides the name checked in the server's
    certificate (for connecting by IP address to a server whose certificate names a host).
    """

    ca: PemSource = None
    cert: PemSource = None
    key: PemSource = None
    server_name: str = ""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: a client certificate needs both cert and key")
        for name in ("ca", "cert", "key"):
            object.__setattr__(self, name, _pem(getattr(self, name), name))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,  # type: ignore[arg-type]
            private_key=self.key,  # type: ignore[arg-type]
            certificate_chain=self.cert,  # type: ignore[arg-type]
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def __repr__(self) -> str:  # never print key material
        parts = [f"{name}=set" for name in ("ca", "cert", "key") if getattr(self, name) is not None]
        if self.server_name:
            parts.append(f"server_name={self.server_name!r}")
        return f"TLS({', '.join(parts)})"


def _pem(source: PemSource, name: str) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"TLS: cannot read {name} file {path}: {exc.strerror or exc}") from exc


def resolve(tls: TLS | bool | None) -> TLS | None:
    """tls=True means TLS with the default roots; False/None means plaintext."""
    if tls is True:
        return TLS()
    if tls is False or tls is None:
        return None
    if not isinstance(tls, TLS):
        raise TypeError(f"tls must be a pushplat_client.TLS, True or None, not {type(tls).__name__}")
    return tls


class ChannelFactory:
    """Opens channels to one address, plaintext or with the TLS settings (credentials built once)."""

    def __init__(self, tls: TLS | bool | None, options: list[tuple[str, Any]]) -> None:
        self.tls = resolve(tls)
        self._credentials = self.tls.credentials() if self.tls else None
        self._options = [*(self.tls.channel_options() if self.tls else []), *options]

    def open(self, address: str, extra: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A channel with the factory's options and ``extra`` ones (which must not repeat them)."""
        options = [*self._options, *extra]
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, self._credentials, options=options)
