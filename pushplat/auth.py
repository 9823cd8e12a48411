"""Client tokens (HS256 JWT via PyJWT) and backend API keys."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
import jwt

DEVICE_CLAIM = "device"


class AuthError(Exception):
    """A token or API key was refused; the message says why."""


class IncompleteHello(ValueError):
    """A Hello that cannot name a device, whatever the credentials (INVALID_ARGUMENT, not auth)."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    device_id: str


def mint_token(secret: str, user_id: str, device_id: str, ttl_seconds: int = 3600) -> str:
    if not secret:
        raise ValueError("a secret is needed to mint a token")
    now = int(time.time())
    claims = {"sub": user_id, DEVICE_CLAIM: device_id, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")


class PushAuthHandler:
    """Decides who a Hello speaks for. With no secret, auth is off and Hello's ids are trusted."""

    def __init__(self, secret: str = "") -> None:
        self._secret = secret

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def identify(self, token: str, user_id: str, device_id: str) -> Identity:
        if not self._secret:
            if not device_id:
                raise IncompleteHello("Hello.device_id is required when auth is off")
            return Identity(user_id or device_id, device_id)
        if not token:
            raise AuthError("Hello.token is required")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        device = claims.get(DEVICE_CLAIM)
        if not isinstance(device, str) or not device or not isinstance(claims["sub"], str):
            raise AuthError(f"invalid token: needs string claims 'sub' and '{DEVICE_CLAIM}'")
        return Identity(claims["sub"], device)


class ApiKeyChecker:
    """Checks `authorization: Bearer <key>` on backend calls. No keys configured: auth is off."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        if not self._keys:
            return
        header = next((v for k, v in (metadata or ()) if k == "authorization"), None)
        if header is None:
            raise AuthError("missing API key: send metadata 'authorization: Bearer <key>'")
        value = header.decode() if isinstance(header, bytes) else header
        scheme, _, key = value.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise AuthError("malformed authorization metadata: expected 'Bearer <key>'")
        # Compare against every key in constant time so timing does not reveal a prefix match.
        ok = False
        for known in self._keys:
            ok |= hmac.compare_digest(known, key.strip().encode())
        if not ok:
            raise AuthError("unknown API key")

    async def require(self, context: grpc.aio.ServicerContext) -> None:
        try:
            self.check(context.invocation_metadata())
        except AuthError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
