"""Headless Chromium for end-to-end tests of pages: Debian's ``chromium`` driven by Playwright.

``chromium_context(directory)`` yields a Playwright ``BrowserContext`` on a fresh user-data-dir in
``directory``. Playwright never downloads a browser here: it drives ``/usr/bin/chromium``. When
Chromium or Playwright is missing the test skips with the command that installs them, except
under ``CI=true``, where it fails (CI installs both: ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update && apt-get install -y chromium && pip install -e '.[test]'"
ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip (fail under ``CI=true``) unless Chromium and Playwright are both installed."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not missing:
        return
    message = f"{' and '.join(missing)} missing; install with: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium_context(directory: Path) -> Iterator[Any]:
    """A headless Chromium context with a fresh profile under ``directory``."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    profile = directory / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGUMENTS,
            viewport={"width": 1000, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def screenshot_file(html: Path, png: Path, *, width: int = 1400, height: int = 900) -> None:
    """A full-page PNG of a local HTML file."""
    with chromium_context(png.parent) as context:
        page = context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.goto(html.resolve().as_uri())
        page.screenshot(path=str(png), full_page=True)
