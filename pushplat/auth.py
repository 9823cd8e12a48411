"""Client tokens (HS256 JWT via PyJWT) and backend API keys."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
import jwt

from pushplat.limits import MAX_TOKEN_BYTES, LimitExceeded, check_id
from pushplat.logs import clip

DEVICE_CLAIM = "device"
# RFC 7518's floor for an HS256 key. The roles and `pushplat token` warn below it in their own
# words, once; PyJWT's own warning would add its source path (and at the first Hello, too).
MIN_SECRET_BYTES = 32
warnings.filterwarnings("ignore", message=r"The HMAC key is \d+ bytes long")


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
    """Decides who a Hello speaks for. With no secret, auth is off and Hello's ids are trusted.

    Raises AuthError (UNAUTHENTICATED) for a token that does not verify, and IncompleteHello or
    LimitExceeded (INVALID_ARGUMENT) for ids no device may have, from Hello or from a token.
    """

    def __init__(self, secret: str = "") -> None:
        self._secret = secret

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def identify(self, token: str, user_id: str, device_id: str) -> Identity:
        if not self._secret:
            if not device_id:
                raise IncompleteHello("Hello.device_id is required when auth is off")
            check_id("Hello.device_id", device_id)
            if user_id:
                check_id("Hello.user_id", user_id)
            return Identity(user_id or device_id, device_id)
        if not token:
            raise AuthError("Hello.token is required")
        if len(token) > MAX_TOKEN_BYTES or len(token.encode()) > MAX_TOKEN_BYTES:
            raise LimitExceeded(
                "token_bytes", f"Hello.token is {len(token.encode())} bytes; the limit is {MAX_TOKEN_BYTES} bytes"
            )
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise AuthError(_token_error(exc, token, self._secret)) from exc
        user, device = claims["sub"], claims.get(DEVICE_CLAIM)
        if not isinstance(device, str) or not isinstance(user, str):
            raise AuthError(_STRING_CLAIMS)
        check_id("token claim 'sub'", user)
        check_id(f"token claim '{DEVICE_CLAIM}'", device)
        return Identity(user, device)


_STRING_CLAIMS = f"invalid token: needs string claims 'sub' and '{DEVICE_CLAIM}'"
# PyJWT's own messages can carry decoder internals ("'utf-8' codec can't decode byte ..."):
# a client gets one of these fixed reasons instead, most specific class first.
_TOKEN_ERRORS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidSignatureError, "invalid token: the signature does not match this edge's secret"),
    (jwt.InvalidAlgorithmError, "invalid token: only HS256 tokens are accepted"),
    (jwt.ImmatureSignatureError, "invalid token: not valid yet (nbf or iat is in the future)"),
    (jwt.InvalidIssuedAtError, "invalid token: 'iat' must be a number"),
    (jwt.exceptions.InvalidSubjectError, _STRING_CLAIMS),
    (jwt.InvalidAudienceError, "invalid token: it has an 'aud' claim; this edge takes tokens without one"),
    (jwt.exceptions.InvalidJTIError, "invalid token: 'jti' must be a string"),
    (jwt.DecodeError, "invalid token: not a well-formed HS256 JWT (header.payload.signature)"),
)
_WHAT_WE_TAKE = (
    f"invalid token: this edge takes an HS256 JWT with string claims 'sub' and '{DEVICE_CLAIM}', "
    "a numeric 'exp', and no critical header extensions"
)
_TIME_CLAIMS = ("exp", "nbf")


def _token_error(exc: jwt.InvalidTokenError, token: str, secret: str) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"invalid token: missing required claim '{exc.claim}'"
    if type(exc) is jwt.DecodeError and (claim := _bad_time_claim(token, secret)):
        return f"invalid token: '{claim}' must be a number (seconds since the epoch)"
    for kind, message in _TOKEN_ERRORS:
        if isinstance(exc, kind):
            return message
    return _WHAT_WE_TAKE


def _bad_time_claim(token: str, secret: str) -> str | None:
    """The exp or nbf claim that is not a number, if that is why a signed token failed: PyJWT
    says so only in a DecodeError, the class it also raises for tokens that do not parse."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={f"verify_{claim}": False for claim in _TIME_CLAIMS}
        )
    except jwt.InvalidTokenError:
        return None
    for claim in _TIME_CLAIMS:
        try:
            int(claims.get(claim, 0))
        except (TypeError, ValueError):
            return claim
    return None


# Callers of an api with no --api-key configured are all this one (anonymous) sender.
ANONYMOUS_SENDER = ""
_SENDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ApiKey:
    """One configured key and the sender identity it authenticates as."""

    sender: str
    secret: bytes


def key_fingerprint(key: str) -> str:
    """The identity of an unnamed key: stable across restarts and processes, never the key."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_api_keys(entries: Iterable[str]) -> list[ApiKey]:
    """``NAME:KEY`` names the sender (several keys of one name are one sender, for rotation);
    a bare ``KEY`` is its own sender, identified by its fingerprint. Raises ValueError."""
    keys: list[ApiKey] = []
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        if not sep:
            name, key = key_fingerprint(entry), entry
        elif not _SENDER_NAME.fullmatch(name):
            raise ValueError(
                f"--api-key {clip(name)!r}:...: a sender name is 1-64 characters of letters, digits, '_', '.', '-'"
            )
        if not key.strip():
            raise ValueError(f"--api-key {name}:...: the key after the name is empty")
        key = key.strip()
        if seen.get(key, name) != name:
            raise ValueError(f"--api-key: one key is given for two senders ({seen[key]!r} and {name!r})")
        seen[key] = name
        keys.append(ApiKey(name, key.encode()))
    return keys


class ApiKeyChecker:
    """Checks `authorization: Bearer <key>` on backend calls and says which sender it is.
    No keys configured: auth is off and every caller is ANONYMOUS_SENDER."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = parse_api_keys(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The caller's sender identity, or AuthError."""
        if not self._keys:
            return ANONYMOUS_SENDER
        headers = [v for k, v in (metadata or ()) if k == "authorization"]
        if not headers:
            raise AuthError("missing API key: send metadata 'authorization: Bearer <key>'")
        if len(headers) > 1:  # which one counts would depend on the proxies in between
            raise AuthError(f"{len(headers)} 'authorization' metadata entries: send exactly one 'Bearer <key>'")
        header = headers[0]
        value = header.decode(errors="replace") if isinstance(header, bytes) else header
        scheme, _, key = value.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise AuthError("malformed authorization metadata: expected 'Bearer <key>'")
        # Compare against every key in constant time so timing does not reveal a prefix match.
        given = key.strip().encode()
        sender = None
        for known in self._keys:
            if hmac.compare_digest(known.secret, given):
                sender = known.sender
        if sender is None:
            raise AuthError("unknown API key")
        return sender

    async def require(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's sender identity; ends the call with UNAUTHENTICATED if there is none."""
        try:
            return self.check(context.invocation_metadata())
        except AuthError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise  # abort raises; this keeps type checkers sure a sender is returned
