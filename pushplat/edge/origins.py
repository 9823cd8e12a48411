"""Which web pages may open a WebSocket to the edge (the Origin header a browser sends).

A page on any site can open a WebSocket to any address, and the browser attaches no
credentials of ours; the token travels in Hello. The check stops other sites' pages from
using a visitor's browser as a device (or as a connection flood) on our behalf.
"""

from __future__ import annotations

import re

# The default: pages served from this machine only (the demo page, a dev server), on any port.
LOCAL_ORIGINS = (
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://[::1]:*",
    "https://[::1]:*",
)


class OriginCheck:
    """Exact origins (`https://app.example.com`), a `*.` subdomain wildcard
    (`https://*.example.com`), `:*` for any port, or `*` for every origin (not for production).
    Requests without an Origin header are not from a browser page and pass: a token still
    guards them."""

    def __init__(self, allowed: list[str] | tuple[str, ...]) -> None:
        patterns = [a.strip().rstrip("/").lower() for a in allowed if a.strip()] or list(LOCAL_ORIGINS)
        self.any = "*" in patterns
        self.patterns = patterns
        self._regex = re.compile("|".join(_to_regex(p) for p in patterns if p != "*") or "(?!)")

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        if self.any:
            return True
        # Browsers send a bare port-less origin for default ports: match "host" and "host:port".
        return self._regex.fullmatch(origin.strip().lower()) is not None


def _to_regex(pattern: str) -> str:
    if not re.match(r"^[a-z][a-z0-9+.-]*://", pattern):
        raise ValueError(f"--ws-allowed-origins: {pattern!r} is not an origin like https://app.example.com")
    scheme, _, rest = pattern.partition("://")
    any_port = rest.endswith(":*")
    if any_port:
        rest = rest[:-2]
    host = re.escape(rest)
    if rest.startswith("*."):
        host = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\." + re.escape(rest[2:])
    port = r"(?::\d+)?" if any_port else ""
    return f"(?:{re.escape(scheme)}://{host}{port})"
