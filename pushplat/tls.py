"""Certificate files for the gRPC ports: read once at start-up and checked, so that a wrong
path, a key that does not match its certificate or a file that is not PEM is one clear line
before anything listens, instead of a failed handshake per connection later."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


class CertificateError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the option and the file."""


@dataclass(frozen=True)
class KeyPair:
    cert_chain: bytes
    private_key: bytes


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {flag} {path}: {exc.strerror or exc}") from exc


def _no_password() -> bytes:
    raise CertificateError("encrypted private keys are not supported (gRPC cannot prompt for a passphrase)")


def load_key_pair(cert_path: str, key_path: str, cert_flag: str, key_flag: str) -> KeyPair:
    """The certificate chain and its private key, checked to belong together."""
    if bool(cert_path) != bool(key_path):
        given, missing = (cert_flag, key_flag) if cert_path else (key_flag, cert_flag)
        raise CertificateError(f"{given} needs {missing} as well")
    cert, key = _read(cert_path, cert_flag), _read(key_path, key_flag)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except CertificateError as exc:
        raise CertificateError(f"{key_flag} {key_path}: {exc}") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise CertificateError(f"{key_flag} {key_path} is not the private key of {cert_flag} {cert_path}") from exc
        raise CertificateError(
            f"{cert_flag} {cert_path} / {key_flag} {key_path}: not a PEM certificate and key ({exc.reason or exc})"
        ) from exc
    return KeyPair(cert, key)


def load_ca(path: str, flag: str) -> bytes:
    """PEM CA certificate(s), checked to parse."""
    data = _read(path, flag)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=data.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise CertificateError(f"{flag} {path}: no PEM CA certificate in it ({exc})") from exc
    return data


def server_credentials(pair: KeyPair, client_ca: bytes | None = None) -> grpc.ServerCredentials:
    """TLS for a listening port; with client_ca, every client must present a certificate it signed."""
    return grpc.ssl_server_credentials(
        [(pair.private_key, pair.cert_chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
