"""``biounet demo``: the main job on a fresh machine, on built-in synthetic fundus data."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from biounet.config import DataConfig, RunConfig, TrainConfig
from biounet.data.synthetic import write_synthetic_dataset
from biounet.evaluate import evaluate_checkpoint
from biounet.models import preset
from biounet.predict import predict_paths
from biounet.train import fit

log = logging.getLogger(__name__)


def run_demo(out: Path, minutes: float = 3.0, seed: int = 0) -> dict:
    """Generate data, train the small model for ``minutes``, evaluate on held-out images, predict.
    Layout: out/data, out/run, out/eval, out/predictions. Returns the evaluation summary."""
    from biounet.cli_commands import format_summary

    t0 = time.perf_counter()
    data = write_synthetic_dataset(out / "data", n_train=40, n_test=12, seed=seed)
    log.info("synthetic dataset: %s (40 train, 12 test)", data)
    cfg = RunConfig(
        data=DataConfig(root=str(data), labels=("disc", "cup"), image_size=192, val_fraction=0.2),
        model=preset("small", in_channels=0),
        train=TrainConfig(epochs=200, batch_size=8, lr=2e-3, seed=seed, max_minutes=minutes),
        preset="small",
    )
    run = fit(cfg, out / "run")
    summary = evaluate_checkpoint(run / "best.pt", data, "test", out / "eval")
    print(format_summary(summary))
    test_images = [data / "images" / f"synth_{i:03d}.png" for i in range(40, 52)]
    predict_paths(run / "best.pt", test_images, out / "predictions", overwrite=True)
    print(
        f"demo done in {time.perf_counter() - t0:.0f} s: run {run}, evaluation {out / 'eval'}, "
        f"overlays {out / 'predictions'}/*_overlay.png"
    )
    return summary
