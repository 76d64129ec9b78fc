"""benchmarks/drishti_extras.py end to end on a tiny synthetic dataset with an untrained two-stage
pipeline at 32 px: evaluation with uncertainty, report screenshot, nnU-Net round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from biounet.checkpoint import save_checkpoint, save_pipeline
from biounet.data.synthetic import write_synthetic_dataset
from biounet.infer import preprocess_spec
from biounet.models import build_model, preset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "drishti_extras.py"
pytestmark = pytest.mark.slow


def tiny_pipeline(folder: Path) -> Path:
    cfg = preset("small", in_channels=3, out_channels=2)
    parts = {}
    for seed, name in enumerate(("locator", "roi")):
        torch.manual_seed(seed)
        parts[name] = folder / f"{name}.pt"
        prep = {**preprocess_spec(32, 3), "roi_scale": 2.0}
        save_checkpoint(parts[name], build_model(cfg).eval(), cfg, ("disc", "cup"), prep)
    save_pipeline(folder / "fundus.pt", parts, {})
    return folder / "fundus.pt"


def test_drishti_extras_on_synthetic_data(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", n_train=3, n_test=3, h=64, w=72)
    ck = tiny_pipeline(tmp_path)
    results = tmp_path / "results"
    args = ["--checkpoint", str(ck), "--data", str(data), "--work", str(tmp_path / "work")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--results", str(results)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((results / "drishti_extras.json").read_text())
    e = out["evaluation"]
    assert e["n_images"] == 3 and e["settings"]["tta"] is True
    assert set(e["ece"]) == {"disc", "cup"} and all(0 <= v <= 1 for v in e["ece"].values())
    for k in ("mean_over_labels", "disc", "cup"):
        u = e["uncertainty"][k]
        assert u["n_images"] == 3
        assert u["auroc"] is None or 0 <= u["auroc"] <= 1
    rt = out["nnunet_round_trip"]
    assert (rt["n_images"], rt["images_identical"]) == (6, 6)
    assert (rt["n_masks"], rt["masks_identical"]) == (12, 12)
    assert rt["test_split_identical"] and (rt["n_train_nnunet"], rt["n_test_nnunet"]) == (3, 3)
    assert "AUROC" in (results / "drishti_extras.md").read_text()
    assert (
        not list(data.rglob("*nnunet*")) and (tmp_path / "work" / "eval" / "report.html").is_file()
    )
    if Path("/usr/bin/chromium").is_file():
        shot = tmp_path / "work" / "drishti_report.png"
        with Image.open(shot) as im:
            assert im.size == (1000, 2000) and im.mode == "P"
        assert shot.stat().st_size < 500_000 and out["screenshot"]["console_messages"] == []
        sizes = [max(i["size"]) for i in out["screenshot"]["embedded_images"]]
        assert sorted(sizes)[:3] == [256, 256, 256]  # the case thumbnails
