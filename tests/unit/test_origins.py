"""--ws-allowed-origins: which pages may open a WebSocket to the edge."""

from __future__ import annotations

import pytest

from pushplat.cli import build_parser, config_from_args
from pushplat.edge.origins import OriginCheck


def test_the_default_lets_only_pages_on_this_machine_in():
    check = OriginCheck([])
    for origin in ("http://localhost:8080", "http://127.0.0.1:50054", "https://localhost", "http://[::1]:3000"):
        assert check.allows(origin), origin
    for origin in ("https://evil.example.com", "http://localhost.evil.com", "http://127.0.0.1.nip.io:80", "null"):
        assert not check.allows(origin), origin


def test_exact_origins_subdomain_and_port_wildcards():
    check = OriginCheck(["https://app.example.com", "https://*.example.org", "http://dev.local:*"])
    assert check.allows("https://app.example.com")
    assert check.allows("HTTPS://APP.EXAMPLE.COM")
    assert not check.allows("http://app.example.com")  # another scheme is another origin
    assert not check.allows("https://app.example.com:8443")
    assert check.allows("https://a.b.example.org") and not check.allows("https://example.org")
    assert not check.allows("https://evil-example.org")
    assert check.allows("http://dev.local:5173") and check.allows("http://dev.local")
    assert not check.allows("http://localhost:8080")  # a list replaces the default


def test_no_origin_header_is_not_a_browser_page_and_star_allows_all():
    assert OriginCheck(["https://app.example.com"]).allows(None)
    assert OriginCheck(["*"]).allows("https://anything.example")


def test_a_bad_pattern_says_what_an_origin_looks_like():
    with pytest.raises(ValueError, match=r"not an origin like https://app\.example\.com"):
        OriginCheck(["app.example.com"])


def test_ws_port_is_on_in_dev_and_off_for_a_separate_edge(monkeypatch):
    monkeypatch.delenv("PUSHPLAT_WS_PORT", raising=False)
    assert config_from_args(build_parser().parse_args(["dev"])).ws_port == 50054
    assert config_from_args(build_parser().parse_args(["edge"])).ws_port == 0
    monkeypatch.setenv("PUSHPLAT_WS_ALLOWED_ORIGINS", "https://a.example,https://b.example")
    config = config_from_args(build_parser().parse_args(["edge", "--ws-port", "9000"]))
    assert (config.ws_port, config.ws_allowed_origins) == (9000, ["https://a.example", "https://b.example"])
