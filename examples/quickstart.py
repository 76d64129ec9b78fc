"""biounet from Python: make a small synthetic fundus dataset, train, evaluate, predict.

    python examples/quickstart.py [OUT_FOLDER]     # default: quickstart_out/

Runs in a few seconds on a CPU: 2 epochs at 64 px, far too little to learn the task, so expect low
Dice; raise "epochs" and "image_size" (e.g. 60 and 192) for a useful model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import biounet
from biounet.data.synthetic import write_synthetic_dataset


def main(out: Path) -> dict[str, Any]:
    # 1. data: images/, masks/disc/, masks/cup/ and splits.json (8 train, 3 test), 72x64 px
    data = write_synthetic_dataset(out / "data", n_train=8, n_test=3, h=64, w=72)

    # 2. train: a dict (or a biounet.config.RunConfig) describing the run
    config = {
        "data": {"root": str(data), "labels": ["disc", "cup"], "image_size": 64},
        "train": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "precision": "fp32"},
        "preset": "small",
    }
    run = biounet.fit(config, out / "run")  # best.pt, metrics.csv, curves.png, report.html, ...
    print(f"run folder: {run}")

    # 3. evaluate on the held-out test split, at each mask's own resolution
    summary = biounet.evaluate(run / "best.pt", data, split="test", out_dir=out / "eval")
    for label, m in summary["labels"].items():
        print(
            f"test Dice {label}: {m['dice_mean']:.3f} ± {m['dice_std']:.3f} (worst {m['dice_min']:.3f})"
        )
    print(f"report: {out / 'eval' / 'report.html'}")

    # 4. predict: a path or a numpy array (H, W) / (H, W, C), uint8, uint16 or float
    model = biounet.load_model(run / "best.pt")
    result = model.predict(data / "images" / "synth_008.png")
    print(f"{model}: prob {result.prob.shape} {result.prob.dtype}")
    for label, mask in result.masks.items():
        print(f"  {label}: mask {mask.shape} {mask.dtype}, {int(mask.sum())} pixels")
    if result.measures:
        print(f"  vertical cup-to-disc ratio {result.measures['vcdr']:.2f}")
    grey16 = (np.random.default_rng(0).random((50, 40)) * 65535).astype(np.uint16)
    print(f"  a 50x40 uint16 array gives prob {model.predict(grey16).prob.shape}")
    return {"run": run, "summary": summary, "model": model, "result": result}


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny tensors: more threads cost more than they save
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart_out"))
