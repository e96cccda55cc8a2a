"""A real headless Chromium for the console's tests: Debian's package, driven through Playwright.

Playwright's own browser downloads are never used (``executable_path`` points at the system's Chromium:
``tests/install-chromium`` installs it, ``ESTEIRA_CHROMIUM`` names another). Without one the tests that need
it skip and say why. ``ESTEIRA_SCREENSHOTS=<folder>`` makes :func:`screenshot` save each page it is given:
the README's pictures are refreshed that way, never by hand.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def chromium_path() -> str | None:
    named = os.environ.get("ESTEIRA_CHROMIUM")
    if named:
        return named
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (one per test module), or a skip that says what is missing."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine: run tests/install-chromium (Debian's chromium package) or set "
                    "ESTEIRA_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("ESTEIRA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"console-{name}.png"))
