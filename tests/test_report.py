"""report.html without a browser: hand-computed tables, escaping, self-containment, thumbnails."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from biounet.metrics import bootstrap_ci
from biounet.report import label_table, write_report
from biounet.viz import contour_thumbnail

COLS = ["stem", "label", "dice", "iou", "bce", "precision", "recall", "hd95", "asd"]


def write_rows(folder: Path, rows: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        w.writerows(rows)
    return folder


def row(stem: str, dice: float, hd95: float = 1.0) -> dict[str, object]:
    return {"stem": stem, "label": "disc", "dice": dice, "iou": dice, "bce": 0.1,
            "precision": 1.0, "recall": dice, "hd95": hd95, "asd": 0.5}  # fmt: skip


def cells(html: str, metric: str) -> list[str]:
    """The text of the cells of the label table's row for ``metric``."""
    tr = re.search(rf"<tr><td>disc</td><td>{metric}</td>(.*?)</tr>", html).group(1)
    return re.findall(r">([^<>]*)</td>", tr)


def test_label_table_mean_std_median_worst(tmp_path: Path) -> None:
    folder = write_rows(tmp_path, [row("a", 0.9), row("b", 0.5), row("c", 0.7, hd95=np.inf)])
    rows = list(csv.DictReader(open(folder / "per_image.csv")))  # noqa: SIM115
    html = label_table(rows)
    # Dice 0.9, 0.5, 0.7: mean 0.7, population std sqrt(0.08/3), median 0.7, worst 0.5 (image b)
    lo, hi = bootstrap_ci([0.9, 0.5, 0.7])  # within the smallest and largest value
    assert 0.5 <= lo < 0.7 < hi <= 0.9
    ci = f"{lo:.4f} - {hi:.4f}"
    assert cells(html, "Dice") == ["0.7000", ci, "0.1633", "0.7000", "0.5000 (b)", "3"]
    # HD95 1, 1, inf: the infinite one is the worst but stays out of mean/std/median/n/CI
    assert cells(html, "HD95 \\(px\\)") == ["1.00", "1.00 - 1.00", "0.00", "1.00", "∞ (c)", "2"]


def test_report_escapes_and_needs_no_network(tmp_path: Path) -> None:
    evil = '<img src="http://x/y.png" onerror=alert(1)>'
    eval_dir = write_rows(tmp_path / "eval", [row(evil, 0.8), row("ok", 0.6)])
    cases = eval_dir / "cases"
    cases.mkdir()
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(cases / "best.png")
    (cases / "cases.json").write_text(
        json.dumps([{"rank": "best", "stem": evil, "file": "best.png", "dice": {"disc": 0.8}}])
    )
    cfg = {"data": {"root": "</script><script>alert(1)</script>"}, "train": {"epochs": 2}}
    page = write_report(tmp_path / "r.html", "t <b>", cfg, eval_dir).read_text()
    assert evil not in page and "<script>alert" not in page
    assert "&lt;img src=&quot;http://x/y.png&quot;" in page
    assert page.count("<script>") == 1  # the page's own sorting script only
    # nothing to fetch: every src is a data: URI, no stylesheet links
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', page))
    assert "<link" not in page and "@import" not in page
    assert "<title>t &lt;b&gt;</title>" in page
    assert "data.root" in page and "train.epochs" in page
    # one row per image in the sortable table, each with its exact value for sorting
    body = page.split('id="per-image"')[1].split("</table>")[0]
    assert body.count("<tr>") == 1 + 2
    assert 'data-v="0.8"' in body and 'data-v="0.6"' in body


def test_thumbnail_draws_prediction_solid_and_truth_dashed() -> None:
    img = np.full((100, 120, 3), 90, np.uint8)
    truth = {"disc": np.zeros((100, 120), bool), "cup": np.zeros((100, 120), bool)}
    truth["disc"][40:60, 50:70] = True
    truth["cup"][45:55, 55:65] = True
    pred = {"disc": np.roll(truth["disc"], 3, axis=1), "cup": truth["cup"].copy()}
    out = contour_thumbnail(img, truth, pred, side=128)
    # small structures: zoomed on a square crop around them, resized to 128 px
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert {(255, 0, 0), (255, 255, 0), (255, 255, 255), (0, 0, 0), (90, 90, 90)} <= colours
    big = {"disc": np.ones((100, 120), bool)}
    assert contour_thumbnail(img, big, big, side=60).shape == (50, 60, 3)  # no zoom: aspect kept


@pytest.mark.slow
def test_train_and_evaluate_write_reports(synthetic_data: Path, tmp_path: Path) -> None:
    from biounet.api import evaluate, fit

    cfg = {"data": {"root": str(synthetic_data), "image_size": 64}, "train": {"epochs": 1}}
    run = fit(cfg, tmp_path / "run")
    page = (run / "report.html").read_text()
    assert "biounet training run: run" in page and "Training curves" in page
    val = json.loads((run / "val" / "summary.json").read_text())
    assert val["n_images"] == 1  # 20 % of the 6 training images; never the test split
    evaluate(run / "best.pt", synthetic_data, "test", tmp_path / "eval")
    cases = json.loads((tmp_path / "eval" / "cases" / "cases.json").read_text())
    assert [c["rank"] for c in cases] == ["best", "median", "worst"]
    means = [np.mean(list(c["dice"].values())) for c in cases]
    assert means == sorted(means, reverse=True)
    page = (tmp_path / "eval" / "report.html").read_text()
    assert page.count('<figure><img src="data:image/png;base64,') == 3
    assert "Training curves" in page  # the checkpoint sits in its run folder
