"""U-Net vs Attention U-Net vs UNet++ (presets small, attention_small, unetpp_small: widths 16..256),
the same recipe and time budget each, on Drishti-GS1 and ISBI 2012; the paper's U-Net row on ISBI is
read from benchmarks/results/isbi2012_em.json when present (not retrained). Writes
benchmarks/results/family.json and family.md.

    python benchmarks/family.py          # 9 folds x 1.25 min + 3 x 1.5 min + eval: ~24 min
    python benchmarks/family.py --quick  # smoke test (8 Drishti images, 1 epoch); in --work

Drishti-GS1: k-fold cross-validation (``biounet.cv``) on the 50 training images, whole images at
256 px; each fold's best.pt scored on its held-out images; the test split is never touched.
ISBI 2012: trained on slices 00-24 (the best epoch and the membrane threshold chosen on the run's
own validation slices among them), scored once on 25-29 with ``biounet.em.metrics.em_scores``. The
label is the membrane (masks inverted: 0 = membrane in the files), so the model's probability is
the membrane probability that V-Rand segments. Cost: parameters, training and inference img/s and
peak memory, each measured in its own process (benchmarks/family_worker.py).

Data: ../shared/data/{drishti_gs1,isbi2012_em} (or --drishti/--isbi). Runs go to --work; folds
and ISBI runs already done there with the same settings are reused, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Imported now, not lazily, so edits to the tree during a long run cannot break it midway.
import biounet.report  # noqa: E402, F401
import biounet.viz  # noqa: E402, F401
from biounet.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from biounet.cv import run_cv  # noqa: E402
from biounet.data.folder import read_splits  # noqa: E402
from biounet.data.io import read_image  # noqa: E402
from biounet.em.tiles import read_em_slices  # noqa: E402
from biounet.em.train_em import choose_threshold, mean_scores, score_slices  # noqa: E402
from biounet.models import preset  # noqa: E402
from biounet.predictor import PredictOptions, make_predictor  # noqa: E402
from biounet.train import fit  # noqa: E402
from biounet.train_data import split_samples  # noqa: E402
from common import RESULTS, SHARED_DATA, make_view, require, update_results  # noqa: E402
from family_stats import (  # noqa: E402
    DRISHTI_LABELS,
    EM_KEYS,
    drishti_entry,
    markdown,
    run_throughput,
    verdict,
)

NAME = "family"
MODELS = ("small", "attention_small", "unetpp_small")
EM_TRAIN, EM_SCORE = list(range(25)), list(range(25, 30))
WORKER = Path(__file__).resolve().parent / "family_worker.py"


def run_config(
    name: str,
    root: Path,
    labels: tuple[str, ...],
    size: int,
    batch: int,
    minutes: float,
    args: argparse.Namespace,
    **data: Any,
) -> RunConfig:
    """The one recipe every model gets: constant Adam lr (a time budget has no known epoch count
    for a schedule to decay over), the best epoch chosen on validation Dice."""
    return RunConfig(
        data=DataConfig(root=str(root), labels=labels, image_size=size, val_fraction=0.2, **data),
        model=preset(name, in_channels=0),
        train=TrainConfig(
            epochs=args.max_epochs,
            max_minutes=minutes,
            batch_size=batch,
            lr=args.lr,
            lr_schedule="constant",
            seed=args.seed,
            precision=args.precision,
        ),
        preset=name,
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def drishti_cv(name: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = run_config(name, root, DRISHTI_LABELS, 256, args.batch, args.minutes, args)
    out = args.work / f"drishti_{name}_f{args.folds}_m{args.minutes}"
    summary = run_cv(cfg, out, folds=args.folds)
    if summary is None:
        raise RuntimeError(f"{out}: cross-validation did not finish every fold")
    runs = []
    for k in range(args.folds):
        info = json.loads((out / f"fold_{k}" / "fold.json").read_text())
        rows = read_rows(out / f"fold_{k}" / "run" / "metrics.csv")
        runs.append(run_throughput(rows, len(info["train"]), args.batch))
    seconds = sum(r["seconds"] for r in runs)
    img_s = sum(r["img_s"] * r["seconds"] for r in runs) / seconds  # images seen / seconds
    return drishti_entry(summary) | {
        "epochs_per_fold": [r["epochs"] for r in runs],
        "train_seconds_per_fold": [r["seconds"] for r in runs],
        "train_img_s_in_runs": img_s,
    }


def isbi_run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    out = args.work / f"isbi_{name}_s{args.isbi_size}_m{args.isbi_minutes}"
    stems = tuple(f"train_{i:02d}" for i in EM_TRAIN)
    cfg = run_config(
        name,
        args.isbi,
        ("membrane",),
        args.isbi_size,
        args.isbi_batch,
        args.isbi_minutes,
        args,
        train_stems=stems,
        invert_masks=("membrane",),
    )
    done = out / "family_scores.json"
    rescore = False
    if done.is_file() and json.loads(done.read_text()).get("config") == cfg.to_dict():
        if all(k in json.loads(done.read_text()) for k in EM_KEYS):
            return json.loads(done.read_text())  # done already with these settings
        rescore = (out / "best.pt").is_file()  # scored before a metric was added: no retraining
    if not rescore:
        fit(cfg, out)
    tr, val, _ = split_samples(cfg)
    pred = make_predictor(out / "best.pt", PredictOptions(precision=args.precision))

    def prob_interior(indices: list[int]) -> list[np.ndarray]:  # (H, W) each: 1 - P(membrane)
        paths = [args.isbi / "images" / f"train_{i:02d}.png" for i in indices]
        return [1.0 - pred.predict(read_image(p)).prob[0] for p in paths]

    val_idx = [int(s.stem.split("_")[1]) for s in val]
    thr, sweep = choose_threshold(
        prob_interior(val_idx), read_em_slices(args.isbi, val_idx)[1], tuple(args.thresholds)
    )
    rows = score_slices(prob_interior(EM_SCORE), read_em_slices(args.isbi, EM_SCORE)[1], thr)
    mean = mean_scores(rows)
    entry = {
        **{k: mean[k] for k in (*EM_KEYS, "adapted_rand_error")},
        "membrane_threshold": thr,
        "threshold_chosen_on": [s.stem for s in val],
        "threshold_sweep_v_rand_thinned": sweep,
        "per_slice": {
            f"{i:02d}": {k: r[k] for k in EM_KEYS} for i, r in zip(EM_SCORE, rows, strict=True)
        },
        "trained_on": [s.stem for s in tr],
    }
    run = run_throughput(read_rows(out / "metrics.csv"), len(tr), args.isbi_batch)
    entry |= {"epochs": run["epochs"], "train_seconds": run["seconds"]}
    entry |= {"train_img_s_in_runs": run["img_s"], "config": cfg.to_dict()}
    done.write_text(json.dumps(entry, indent=2))
    return entry


def paper_unet(results: Path) -> dict[str, Any] | None:
    """The paper's U-Net on slices 25-29 from isbi2012_em.json (not retrained here)."""
    path = results / "isbi2012_em.json"
    if not path.is_file() or "val" not in json.loads(path.read_text()):
        return None
    d = json.loads(path.read_text())
    v, s = d["val"], d.get("settings", {})
    return {
        **{k: v[k] for k in EM_KEYS},
        "membrane_threshold": v.get("membrane_threshold"),
        "per_slice": v.get("per_slice"),
        "parameters": s.get("parameters"),
        "note": f"paper_valid_small from isbi2012_em.json (commit {d.get('commit')}), not retrained "
        f"here: unpadded convs, no BN, weighted cross-entropy on {s.get('out_tile')} px output "
        f"tiles, trained on slices 00-19 for {s.get('minutes_per_run')} min (arm "
        f"{v.get('arm')}), threshold and arm chosen on 20-24: a different protocol and budget.",
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(spec)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])


def speed_memory(name: str, args: argparse.Namespace) -> dict[str, Any]:
    base = {"preset": name, "size": args.speed_size, "precision": args.precision}
    base |= {"reps": args.reps, "warmup": 2}
    tr = worker({**base, "task": "train", "batch": 8})
    i1 = worker({**base, "task": "infer", "batch": 1})
    i4 = worker({**base, "task": "infer", "batch": 4})
    logging.info(
        "%s: train %.1f img/s, infer %.1f / %.1f img/s", name, tr["img_s"], i1["img_s"], i4["img_s"]
    )
    return {
        "parameters": tr["parameters"],
        "precision": tr["precision"],
        "train_img_s": tr["img_s"],
        "train_peak_mb": tr["peak_mb"],
        "infer_img_s_b1": i1["img_s"],
        "infer_img_s_b4": i4["img_s"],
        "infer_peak_mb_b1": i1["peak_mb"],
        "infer_peak_mb_b4": i4["peak_mb"],
        "baseline_rss_mb": tr["baseline_rss_mb"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--drishti", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--isbi", type=Path, default=SHARED_DATA / "isbi2012_em")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_family"))
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=1.25, help="training budget per fold")
    ap.add_argument("--batch", type=int, default=8, help="Drishti batch (256 px)")
    ap.add_argument("--isbi-minutes", type=float, default=1.5)
    ap.add_argument("--isbi-size", type=int, default=512)
    ap.add_argument("--isbi-batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-epochs", type=int, default=1000, help="cap; the time budget stops first")
    ap.add_argument("--precision", default="auto", help="auto (bf16 where supported), bf16, fp32")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1 * i for i in range(1, 10)])
    ap.add_argument("--speed-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 folds, ~1 epoch per run")
    ap.add_argument(
        "--only-isbi",
        action="store_true",
        help="redo only the ISBI 2012 part (trained runs are rescored, not retrained); Drishti and "
        "speed results are kept from the results file",
    )
    args = ap.parse_args(argv)
    args.thresholds = [round(t, 2) for t in args.thresholds]
    if args.quick:  # the same pipeline end to end, sized to a few minutes
        args.folds, args.minutes, args.isbi_minutes, args.max_epochs = 2, 0.01, 0.01, 1
        args.isbi_size, args.thresholds, args.speed_size, args.reps = 128, [0.3, 0.5, 0.7], 64, 2
    if args.results is None:
        args.results = args.work / "results" if args.quick else RESULTS
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    drishti_root = require(args.drishti)
    require(args.isbi)
    args.work.mkdir(parents=True, exist_ok=True)
    settings = {
        k: v for k, v in vars(args).items() if k not in ("drishti", "isbi", "work", "results")
    }
    settings |= {
        "val_fraction": 0.2,
        "lr_schedule": "constant",
        "drishti_size": 256,
        "drishti_batch": args.batch,
        "isbi_labels": "membrane (masks inverted)",
    }
    update_results(NAME, "settings", settings, args.results)
    if args.quick:  # 8 training images (symlinks in --work): the same code path, less evaluation
        stems = read_splits(drishti_root)["train"][:8]
        drishti_root = make_view(
            drishti_root, args.work / "quick_view", {"train": stems}, DRISHTI_LABELS
        )
    kept = json.loads((args.results / f"{NAME}.json").read_text()) if args.only_isbi else {}
    if args.only_isbi:
        drishti, speed = kept.get("drishti_cv", {}), kept.get("speed_memory", {})
    else:
        drishti = {n: drishti_cv(n, drishti_root, args) for n in args.models}
        update_results(NAME, "drishti_cv", drishti, args.results)
    isbi = {n: isbi_run(n, args) for n in args.models}
    update_results(NAME, "isbi2012", isbi, args.results)
    paper = paper_unet(RESULTS)
    update_results(NAME, "isbi2012_paper_unet", paper, args.results)
    if not args.only_isbi:
        speed = {n: speed_memory(n, args) for n in args.models}
        update_results(NAME, "speed_memory", speed, args.results)
    data = update_results(NAME, "verdict", verdict(drishti, isbi, speed, paper), args.results)
    (args.results / f"{NAME}.md").write_text(markdown(data))
    print((args.results / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
