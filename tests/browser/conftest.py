"""A real headless Chromium (Debian's chromium + chromium-driver, installed by scripts/test) driven
through selenium, for the demo page and the browser SDK. Nothing here downloads a browser: the
executable and the driver are the ones apt installed. Without them, or without the SDK bundle
(scripts/build-web), the tests skip, except in CI, where that is a failure."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pushplat import web
from tests.e2e.conftest import deployment, processes  # noqa: F401 (the same process fixtures)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PUSHPLAT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PUSHPLAT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
# Screenshots a person should look at; git-ignored, kept after the run (CI artifacts).
ARTIFACTS = ROOT / ".ci-artifacts" / "browser"
# On this machine Chromium must not reach out (no network but the registries), nor sandbox as root.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: scripts/test must install it, so this is a failure, not a skip)")
    pytest.skip(what)


def require_browser() -> None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            _missing(f"{path} not found: apt-get install {package} (scripts/test does)")
    if not web.bundle_built():
        _missing(f"the browser SDK bundle {web.BUNDLE} is not built: run {web.BUILD_HINT}")


class Page:
    """One Chromium window; every selenium call runs in a thread, off the test's event loop."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self._call(self.driver.get, url)

    async def close_tab(self) -> None:
        """Close the tab (its WebSocket goes with it), keeping the browser open on a new, empty tab.
        (Navigating away is not enough: the back-forward cache may keep the page, and its socket, alive.)"""

        def close() -> None:
            old = self.driver.current_window_handle
            self.driver.switch_to.new_window("tab")
            new = self.driver.current_window_handle
            self.driver.switch_to.window(old)
            self.driver.close()
            self.driver.switch_to.window(new)

        await self._call(close)

    async def reload(self) -> None:
        """Reload the page (a new page, so a new connection; a reload never keeps the old one cached)."""
        await self._call(self.driver.refresh)

    async def fill(self, element_id: str, text: str) -> None:
        """Type text into an input, replacing what it held, as a person would."""
        from selenium.webdriver.common.by import By

        def type_text() -> None:
            field = self.driver.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(text)

        await self._call(type_text)

    async def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        await self._call(lambda: self.driver.find_element(By.ID, element_id).click())

    async def demo(self) -> dict[str, Any]:
        """What the demo page shows (window.demo), or {} before its script ran."""
        raw = await self._call(self.driver.execute_script, "return JSON.stringify(window.demo || {})")
        return json.loads(raw)

    async def text(self, element_id: str) -> str:
        script = f"const e = document.getElementById({json.dumps(element_id)}); return e ? e.innerText : ''"
        return await self._call(self.driver.execute_script, script)

    async def rows_with(self, message_id: str) -> int:
        script = "return document.querySelectorAll('#messages tr[data-message-id=\"' + arguments[0] + '\"]').length"
        return await self._call(self.driver.execute_script, script, message_id)

    async def wait(self, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """Poll window.demo until condition(demo) holds; fail with what the page shows."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.demo()
            if condition(state):
                return state
            if time.monotonic() > deadline:
                logs = await self.console()
                pytest.fail(f"timed out after {timeout}s waiting for {what}; the page shows {state}; console: {logs}")
            await asyncio.sleep(0.05)

    async def console(self) -> list[str]:
        try:
            entries = await self._call(self.driver.get_log, "browser")
        except Exception as exc:  # not every driver keeps a console log
            return [f"(no console log: {exc})"]
        return [entry.get("message", "") for entry in entries][-20:]

    async def screenshot(self, name: str, tmp_path: Path) -> Path:
        """Save a PNG under .ci-artifacts/browser/ (and a copy in the test's tmp dir); print the path."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        assert await self._call(self.driver.save_screenshot, str(path)), f"no screenshot written to {path}"
        shutil.copy(path, tmp_path / name)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    """Opens Chromium windows (a fresh profile each); all quit after the test."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def launch() -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tmp_path / f"chromium-profile-{len(drivers)}"
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / f"chromedriver-{len(drivers)}.log"))
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    async def open_page() -> Page:
        return Page(await asyncio.to_thread(launch))

    # Selenium Manager (shipped in the wheel) must not look for drivers online.
    os.environ.setdefault("SE_OFFLINE", "true")
    try:
        yield open_page
    finally:
        for driver in drivers:
            await asyncio.to_thread(driver.quit)
