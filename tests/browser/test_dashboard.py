"""The dashboard in a real headless Chromium against the live API and worker: log in,
submit the LeNet example from the editor, watch its loss curve grow while it trains, read
its gradient flow and layers, predict from an uploaded PNG, compare two jobs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tests.browser.support import WAIT_MS, log_in, nav, shoot, wait_points
from tests.live import LiveService

# A model whose second layer cannot take what the first gives: the summary names it.
BROKEN = {
    "model": {"layers": [
        {"type": "Flatten"},
        {"type": "Linear", "name": "fc1", "in_features": 999, "out_features": 10},
    ]},
    "data": {"dataset": "digits"},
    "train": {"epochs": 1},
}  # fmt: skip


def digit_png() -> bytes:
    """A 28 x 28 grayscale PNG of a hand-drawn-looking "1"."""
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(14, 4), (14, 24)], fill=255, width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def editor_spec(page: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(page.get_by_label("Job spec").input_value())
    return spec


def set_spec(page: Any, spec: dict[str, Any]) -> None:
    page.get_by_label("Job spec").fill(json.dumps(spec, indent=2))


def test_submit_watch_inspect_predict_compare(
    page_at: Any, live: LiveService, screenshots: Path
) -> None:
    page = page_at()
    page.goto(f"{live.base_url}/ui/")
    page.wait_for_url("**/ui/#/login")
    shoot(page, screenshots, "01-login")
    log_in(page, live)
    shoot(page, screenshots, "02-jobs-empty")
    lenet = check_the_editor(page, screenshots)
    # LeNet, long enough to be watched, with histograms for the layer explorer.
    lenet["train"].update({"epochs": 8, "batch_size": 16})
    lenet["hooks"]["histogram_bins"] = 8
    set_spec(page, lenet)
    page.locator("#spec-state.st-valid").wait_for()
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/ui/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    # The second job of the comparison queues behind it (one training worker).
    slower = {**lenet["train"], "epochs": 1, "optimizer": {"name": "SGD", "lr": 0.01}}
    other = live.post_job({**lenet, "train": slower})["id"]

    watch_it_train(page, screenshots)
    inspect_the_layers(page, screenshots)
    page.locator(".job-head .badge.s-succeeded").wait_for(timeout=WAIT_MS)
    page.get_by_role("tab", name="Curves").click()
    wait_points(page, "accuracy")
    shoot(page, screenshots, "08-job-finished")
    predict_and_download(page, screenshots)
    live.wait(other)
    compare(page, screenshots, job_id, other)


def check_the_editor(page: Any, screenshots: Path) -> dict[str, Any]:
    """The editor starts on the LeNet example; the summary shows what it builds, and a
    broken layer is named. Returns the example."""
    nav(page, "New job").click()
    page.wait_for_url("**/ui/#/submit")
    tree = page.locator(".module-tree")
    tree.wait_for()
    assert "(conv1): Conv2d(1, 6, kernel_size=(5, 5)" in tree.inner_text()
    params = page.get_by_role("table", name="named_parameters()").inner_text()
    assert "conv1.weight" in params and "[6, 1, 5, 5]" in params
    assert "Valid: 61,706 parameters" in page.locator("#spec-state").inner_text()
    shoot(page, screenshots, "03-submit-lenet")
    lenet = editor_spec(page)
    assert lenet["model"] == {"preset": "lenet"}

    set_spec(page, BROKEN)
    failing = page.locator(".failing-layer")
    failing.wait_for()
    assert "layers[1]" in failing.inner_text()
    assert "'fc1' (Linear)" in page.locator(".summary-panel .error").inner_text()
    assert page.get_by_role("button", name="Submit job").is_disabled()
    shoot(page, screenshots, "04-submit-broken-layer")
    return lenet


def watch_it_train(page: Any, screenshots: Path) -> None:
    """The loss curve grows while the job trains (its point count, read twice)."""
    first = wait_points(page, "loss")
    status = page.locator(".job-head .badge").inner_text()
    connection = page.locator(".connection").first.inner_text()
    wait_points(page, "loss", more_than=first)  # fails on its timeout if the curve stays
    assert status == "running", f"the job was {status} at the first reading ({first} points)"
    assert connection == "live", f"the page was {connection!r}, not on the live stream"
    assert "train/loss" in page.locator('figure[data-chart="loss"] figcaption').inner_text()
    shoot(page, screenshots, "05-job-curves-training")


def inspect_the_layers(page: Any, screenshots: Path) -> None:
    """The gradient-flow heatmap, then the layer explorer: a statistic, then histograms."""
    page.get_by_role("tab", name="Gradient flow").click()
    wait_points(page, "gradient-flow")
    caption = page.locator('figure[data-chart="gradient-flow"] figcaption').inner_text()
    assert "step columns" in caption
    shoot(page, screenshots, "06-job-gradient-flow")
    page.get_by_role("tab", name="Layer explorer").click()
    wait_points(page, "layer")
    page.get_by_label("Statistic", exact=True).select_option("histogram")
    wait_points(page, "layer-histograms")
    shoot(page, screenshots, "07-job-layer-explorer")


def predict_and_download(page: Any, screenshots: Path) -> None:
    """Predict from an uploaded PNG (the probabilities sum to 1); the events; a checkpoint
    downloaded through the token-carrying fetch."""
    page.get_by_role("tab", name="Predict").click()
    page.get_by_label("Image").set_input_files(
        files=[{"name": "one.png", "mimeType": "image/png", "buffer": digit_png()}]
    )
    page.locator(".preview img").wait_for()
    page.get_by_role("button", name="Predict").click()
    total = page.locator(".prob-sum")
    total.wait_for(timeout=WAIT_MS)
    assert abs(float(total.inner_text()) - 1.0) < 1e-3
    shoot(page, screenshots, "09-job-predict")

    page.get_by_role("tab", name="Events & logs").click()
    events = page.get_by_role("table", name="Lifecycle events, oldest first")
    events.get_by_text("claimed", exact=True).wait_for()
    shoot(page, screenshots, "10-job-events")
    page.get_by_role("tab", name="Checkpoints").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").first.click()
    assert download.value.suggested_filename.endswith(".safetensors")
    shoot(page, screenshots, "11-job-checkpoints")


def compare(page: Any, screenshots: Path, job_id: str, other: str) -> None:
    """Two jobs picked in the jobs list: curves overlaid, the lr difference shown."""
    nav(page, "Jobs").click()
    page.get_by_label(f"select job {job_id[:8]}").check()
    page.get_by_label(f"select job {other[:8]}").check()
    shoot(page, screenshots, "12-jobs-list")
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/ui/#/compare?ids=*")
    diff = page.get_by_role("table", name="Where the specs differ")
    diff.wait_for()
    assert "train.optimizer.lr" in diff.inner_text()
    assert "0.01" in diff.inner_text() and "0.05" in diff.inner_text()
    wait_points(page, "compare:train/loss")
    caption = page.locator('figure[data-chart="compare:train/loss"] figcaption').inner_text()
    assert job_id[:8] in caption and other[:8] in caption  # two curves, one per job
    shoot(page, screenshots, "13-compare")
