"""What the browser tests share: a console watcher, opening a watched page, logging in
through the form, screenshots, and reading a chart's drawn point count."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.live import LiveService

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 120_000  # what a poll for a training job's effect may take on a busy machine


# Chromium logs every 4xx answer to fetch() as "Failed to load resource": the dashboard
# asks for some on purpose (a spec being typed is checked and may be refused, a wrong token
# is refused) and shows them in the page. A 4xx of the API is not a console problem of the
# page; a 5xx is, and so is any failure of its own files under /ui/.
EXPECTED_REFUSAL = re.compile(r"status of 4\d\d ")


@dataclass
class Console:
    """What the page said: console errors / warnings and uncaught exceptions."""

    problems: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        if message.type not in ("error", "warning"):
            return
        url = str(message.location.get("url", ""))
        if "/api/v1/" in url and EXPECTED_REFUSAL.search(message.text):
            return
        self.problems.append(f"console.{message.type}: {message.text} ({url})")

    def on_page_error(self, error: Any) -> None:
        self.problems.append(f"uncaught: {error}")


def open_page(browser: Any, viewport: dict[str, int]) -> tuple[Any, Any, Console]:
    """A fresh context (its own sessionStorage) and page, watched for console problems."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console = Console()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    return context, page, console


def token_of(live: LiveService) -> str:
    """The plaintext bearer token of the live fixture's owner."""
    return live.headers["Authorization"].removeprefix("Bearer ")


def log_in(page: Any, live: LiveService) -> None:
    """Through the login form, as a person would."""
    page.goto(f"{live.base_url}/ui/")
    page.wait_for_url("**/ui/#/login")
    page.get_by_label("API token").fill(token_of(live))
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/#/jobs")


def nav(page: Any, name: str) -> Any:
    """The main navigation's link `name`."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def shoot(page: Any, folder: Path, name: str) -> None:
    """A full-page screenshot, name.png."""
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def chart_points(page: Any, key: str) -> int:
    """How many points the chart `key` (its data-chart attribute) draws now."""
    raw = page.evaluate(
        'key => document.querySelector(`figure[data-chart="${key}"]`)?.dataset.points', key
    )
    return int(raw or 0)


def wait_points(page: Any, key: str, more_than: int = 0, timeout: float = WAIT_MS) -> int:
    """Wait until the chart `key` draws more than `more_than` points; return the count."""
    handle = page.wait_for_function(
        """([key, n]) => {
            const fig = document.querySelector(`figure[data-chart="${key}"]`);
            const points = Number(fig?.dataset.points || 0);
            return points > n ? points : false;
        }""",
        arg=[key, more_than],
        timeout=timeout,
    )
    return int(handle.json_value())
