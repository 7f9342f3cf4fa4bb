"""The quality check's HTML page, opened in a real browser (headless Chromium through Playwright)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from tests.test_quality import _folder
from transferlab.quality import audit
from transferlab.quality.html import write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")
# The flags Chromium needs as root on a machine without a network or a session bus
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_the_page_shows_each_finding_with_its_images_side_by_side(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    data = tmp_path / "data"
    paths, splits, labels = _folder(data, leak=True)
    labels[2] = 1  # train/x/2.png filed under y: a mislabel, with a probability that says x
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(paths), 64))
    features[-1] = features[0] + 0.3 * rng.normal(size=64)
    probs = np.full((len(paths), 2), 0.02)
    probs[np.arange(len(paths)), np.array([0 if p.split("/")[1] == "x" else 1 for p in paths])] = 0.98
    report = audit(str(data), ["x", "y"], paths, splits, labels, features, probs=probs)
    assert report.of("leak") and report.of("label")
    examples = {"x": ["train/x/0.png", "train/x/1.png"], "y": ["train/y/0.png", "train/y/1.png"]}
    page = write_html(report, tmp_path / "html", examples)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1100, "height": 900})
        tab.goto(page.as_uri())
        rows = tab.locator("div.f")
        assert rows.count() == len(report.findings)
        # every thumbnail decoded: the page is self-contained (base64), nothing to fetch
        sizes = tab.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert sizes and all(done and width > 0 for done, width in sizes)
        leak = rows.nth(0)  # leaks first, the val image before its train twin
        assert leak.locator("img").evaluate_all("els => els.map(e => e.alt)") == ["val/x/leak.jpg", "train/x/0.png"]
        boxes = [leak.locator("img").nth(i).bounding_box() for i in range(2)]
        assert abs(boxes[0]["y"] - boxes[1]["y"]) < 1 and boxes[1]["x"] > boxes[0]["x"]  # side by side
        label = tab.locator("div.f", has_text="given y")
        assert "suggested x" in label.first.inner_text()
        # the suspect, then examples of its given class, then of the suggested one
        classes = label.first.locator("img").evaluate_all("els => els.map(e => e.className)")
        assert classes == ["", "given", "given", "sugg", "sugg"]
        shot = tmp_path / "page.png"
        tab.screenshot(path=str(shot), full_page=True)
        browser.close()
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[0] > 300 and pixels.std() > 20  # a drawn page, not a blank one
