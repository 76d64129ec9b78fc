"""report.html in a real headless browser (Debian's chromium): no console errors, one table row per
image, sorting works (the page's own #selftest clicks a header), the screenshot is not blank.

Skipped with a message where /usr/bin/chromium is missing (CI installs it: see .ci/run)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biounet.api import evaluate, fit

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    from headless import CHROMIUM, console_lines, run_chromium
finally:
    sys.path.remove(str(BENCH))

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason="/usr/bin/chromium not found: browser test skipped (apt-get install chromium)",
)


def chromium(tmp: Path, url: str, *extra: str) -> tuple[str, str]:
    """(stdout, stderr) of one headless run with a fresh profile."""
    r = run_chromium(tmp / f"profile{len(list(tmp.glob('profile*')))}", url, *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


@pytest.fixture(scope="module")
def report(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    cfg = {
        "data": {"root": str(synthetic_data), "image_size": 64},
        "train": {"epochs": 1, "batch_size": 4, "precision": "fp32"},
    }
    run = fit(cfg, out / "run")
    evaluate(run / "best.pt", synthetic_data, "test", out / "eval", precision="fp32")
    return out / "eval" / "report.html"


def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    _, err = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert any("Uncaught Error: boom" in ln for ln in console_lines(err))


def test_report_loads_without_console_errors_and_sorts(report: Path, tmp_path: Path) -> None:
    dom, err = chromium(tmp_path, report.as_uri() + "#selftest", "--dump-dom")
    assert console_lines(err) == []
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    # 3 test images; both sort directions ordered; all 5 embedded images (3 cases, the reliability
    # diagram, curves) decoded
    assert title == "selftest ok rows=3 sorted=true images=5/5", title
    table = re.search(r'<table class="sortable" id="per-image">.*?</table>', dom, re.S).group(0)
    assert table.count("<tr>") == 1 + 3  # header + one row per image
    # after the self-test's two clicks the rows are in descending mean Dice (cells: #, mean, ...)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    means = [float(re.findall(r'data-v="([^"]*)"', r)[1]) for r in rows]
    assert len(means) == 3 and means == sorted(means, reverse=True)
    assert 'aria-sort="descending"' in table


def test_report_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    _, err = chromium(tmp_path, report.as_uri(), f"--screenshot={shot}", "--window-size=1280,1600")
    assert console_lines(err) == []
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.shape == (1600, 1280, 3) and img.var() > 0
    # the case thumbnails rendered: fundus-coloured pixels (red-brown, no CSS colour is) fill
    # most of three 256 px squares
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    fundus = (r > 90) & (r > g + 40) & (g > 25) & (b < 80)
    assert fundus.sum() > 60_000, fundus.sum()
