"""The report as a browser shows it: a headless-Chromium screenshot of a synthetic report."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_reporting import make_evaluation

from m2f_bench.errors import M2FError
from m2f_bench.reporting import render_report
from m2f_bench.reporting.browser import find_chromium, screenshot

pytestmark = pytest.mark.slow

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="needs Debian's chromium package (apt-get install chromium)"
)


@needs_chromium
def test_screenshot_of_a_report(tmp_path):
    results, per_image, pair_scores = make_evaluation(tmp_path)
    html = render_report(tmp_path, results, per_image, pair_scores)
    png = screenshot(html, tmp_path / "report.png", width=1200, height=1600)
    image = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert image.shape == (1600, 1200)
    # A blank or error page is nearly uniform; the report has a dark header, text and plots.
    assert image.std() > 20
    assert image[:60].mean() < 100  # the dark title bar rendered
    assert (image > 200).mean() > 0.5  # mostly light page


def test_screenshot_of_a_missing_page_fails(tmp_path):
    with pytest.raises(M2FError, match="no such HTML file"):
        screenshot(tmp_path / "absent.html", tmp_path / "shot.png")


def test_missing_chromium_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("m2f_bench.reporting.browser.find_chromium", lambda: None)
    page = tmp_path / "page.html"
    page.write_text("<p>hi</p>")
    with pytest.raises(M2FError, match="install Debian's chromium package") as info:
        screenshot(page, tmp_path / "shot.png")
    assert "\n" not in str(info.value)
