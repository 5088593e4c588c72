"""The dashboard beyond the main flow: a refused token, the keyboard alone, a 390 px phone,
and a sweep's trials and parallel-coordinates view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.browser.support import PHONE, WAIT_MS, log_in, nav, shoot, token_of, wait_points
from tests.live import LiveService
from tests.support.specs import MLP_SGD, TINY

NAV_LINKS = ("Jobs", "New job", "Compare", "Sweeps")


def test_a_wrong_token_is_refused_with_a_message(page_at: Any, live: LiveService) -> None:
    page = page_at()
    page.goto(f"{live.base_url}/ui/#/jobs")
    page.wait_for_url("**/ui/#/login")  # no token yet: the login view first
    page.get_by_label("API token").fill("ty_not-a-real-token")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").filter(has_text="Not logged in").wait_for()
    assert page.url.endswith("#/login")
    assert page.evaluate("sessionStorage.getItem('trainyard.token')") is None


def focused(page: Any) -> dict[str, str]:
    return dict(
        page.evaluate(
            """() => {
                const el = document.activeElement;
                const style = getComputedStyle(el);
                return {tag: el.tagName, text: (el.textContent || '').trim(),
                        outline: style.outlineStyle, width: style.outlineWidth};
            }"""
        )
    )


def tab_until(page: Any, text: str, presses: int = 25) -> dict[str, str]:
    """Press Tab until the focused element reads `text`; fail naming what was reached."""
    seen = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        now = focused(page)
        seen.append(now["text"][:30])
        if now["text"] == text:
            return now
    raise AssertionError(f"Tab never reached {text!r}; it reached {seen}")


def test_the_keyboard_alone_reaches_the_nav_and_submits(
    page_at: Any, live: LiveService, screenshots: Path
) -> None:
    page = page_at()
    page.goto(f"{live.base_url}/ui/")
    page.wait_for_url("**/ui/#/login")
    # The login view puts the focus in the token field once it is drawn: type after that.
    page.wait_for_function("document.activeElement && document.activeElement.name === 'token'")
    page.keyboard.type(token_of(live))
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/#/jobs")
    page.reload()  # a fresh load: focus starts at the top of the page
    page.get_by_role("table").or_(page.locator(".empty")).first.wait_for()
    first = tab_until(page, "Skip to content", presses=1)
    assert first["outline"] != "none", "the focused link shows a focus outline"
    for name in NAV_LINKS:
        reached = tab_until(page, name, presses=6)
        assert reached["tag"] == "A" and reached["outline"] != "none"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")  # back on "New job"
    assert focused(page)["text"] == "New job"
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/#/submit")
    page.locator("#spec-state.st-valid").wait_for()
    button = tab_until(page, "Submit job")
    assert button["tag"] == "BUTTON" and button["outline"] != "none"
    shoot(page, screenshots, "20-keyboard-submit-focused")
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/#/jobs/*")
    page.get_by_role("tab", name="Curves").wait_for()


def test_a_phone_reads_every_page_without_sideways_scrolling(
    page_at: Any, live: LiveService, screenshots: Path
) -> None:
    job = live.post_job(TINY)
    live.wait(job["id"])
    page = page_at(PHONE)
    log_in(page, live)
    views = {
        "jobs": "#/jobs", "submit": "#/submit", "job": f"#/jobs/{job['id']}",
        "compare": "#/compare", "sweeps": "#/sweeps",
    }  # fmt: skip
    for name, route in views.items():
        page.goto(f"{live.base_url}/ui/{route}")
        page.locator("main h1").first.wait_for()
        if name == "job":
            wait_points(page, "loss")
        if name == "submit":
            page.locator("#spec-state.st-valid").wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: the page is {width} px wide on a 390 px phone"
        shoot(page, screenshots, f"3{list(views).index(name)}-phone-{name}")


def test_a_sweep_shows_its_trials_best_and_parallel_coordinates(
    page_at: Any, live: LiveService, screenshots: Path
) -> None:
    body = {
        "name": "ui lr sweep", "spec": MLP_SGD,
        "space": {"train.optimizer.lr": {"choice": [0.01, 0.1]}},
        "method": "grid", "metric": "val/accuracy", "goal": "maximize",
        "max_trials": 2, "parallel": 2,
    }  # fmt: skip
    resp = requests.post(
        f"{live.base_url}/api/v1/sweeps", json=body, headers=live.headers, timeout=30
    )
    assert resp.status_code == 201, resp.text
    page = page_at()
    log_in(page, live)
    nav(page, "Sweeps").click()
    page.get_by_role("link", name="ui lr sweep").click()
    page.wait_for_url("**/ui/#/sweeps/*")
    wait_points(page, "parallel", more_than=1, timeout=WAIT_MS)  # both trials finished
    trials = page.get_by_role("table", name="Trials by number")
    assert trials.locator("tbody tr").count() == 2
    assert "val/accuracy =" in page.locator(".best").inner_text()
    shoot(page, screenshots, "40-sweep")
