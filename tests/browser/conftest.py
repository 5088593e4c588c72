"""Browser fixtures: Debian's Chromium driven by Playwright against the live API + worker
(tests.live), a page that fails its test on any console error or uncaught exception, and
the folder the screenshots go to (TRAINYARD_SCREENSHOTS, else .artifacts/screenshots)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import DESKTOP, Console, open_page

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (never a downloaded one)."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian's chromium package): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where each page's screenshot is saved."""
    folder = Path(os.environ.get("TRAINYARD_SCREENSHOTS") or ROOT / ".artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture()
def page_at(browser: Any) -> Iterator[Callable[..., Any]]:
    """page_at(viewport) -> a page; the test fails if any page logged an error."""
    opened: list[tuple[Any, Any, Console]] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Any:
        opened.append(open_page(browser, viewport))
        return opened[-1][1]

    yield make
    problems = [p for _, _, console in opened for p in console.problems]
    for context, _, _ in opened:
        context.close()
    assert not problems, "the dashboard logged errors:\n" + "\n".join(problems)
