"""The demo page and the browser SDK bundle, served on the WebSocket port's HTTP side.

The page (static/) is source. The bundle (static/sdk/pushplat.js) is a build output of
clients/typescript (`npm run build:browser`), copied here by scripts/build-web, which
scripts/run and scripts/test call; it is not in git. Without it the page says how to build it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
BUNDLE = STATIC / "sdk" / "pushplat.js"
BUILD_HINT = "scripts/build-web (scripts/run and scripts/test run it; it needs node and npm)"

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".svg": "image/svg+xml",
}

# Served by name: nothing outside this list is reachable, whatever the path says.
PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/app.js": "app.js",
    "/style.css": "style.css",
    "/sdk/pushplat.js": "sdk/pushplat.js",
    "/sdk/pushplat.js.map": "sdk/pushplat.js.map",
}

MISSING_BUNDLE_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pushplat demo: SDK bundle not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The browser SDK bundle is not built</h1>
<p>This page runs the pushplat browser SDK, which is built from <code>clients/typescript</code>
and is not kept in git. Build it with <code>{BUILD_HINT}</code>, then reload.</p>
</body></html>
"""


@dataclass
class Asset:
    status: int
    content_type: str
    body: bytes


def bundle_built() -> bool:
    return BUNDLE.is_file()


def asset(path: str) -> Asset | None:
    """The file for a GET of path, or None (404). Looked up per request, so building the
    bundle while the server runs is enough."""
    name = PAGES.get(path.split("?", 1)[0])
    if name is None:
        return None
    if name == "index.html" and not bundle_built():
        return Asset(200, TYPES[".html"], MISSING_BUNDLE_PAGE.encode())
    file = STATIC / name
    try:
        body = file.read_bytes()
    except OSError:
        return None
    return Asset(200, TYPES.get(file.suffix, "application/octet-stream"), body)
