"""ISBI 2012 EM membranes with the paper's unpadded U-Net (``paper_valid_small``).

    python benchmarks/isbi2012_em.py                    # 4 x 4.5 min training + ~6 min: ~25 min
    python benchmarks/isbi2012_em.py --quick            # smoke test, ~1-2 min, results in --work
    python benchmarks/isbi2012_em.py --long 20          # two arms x 20 min more: key long_runs

Protocol (contiguous slices, neighbours being 50 nm apart): every ablation arm trains on slices
00-19; slices 20-24 pick the membrane threshold (best mean V_rand) and the best arm; that arm's
model, not retrained, is scored once on slices 25-29 ("val"). Ablation: {weight map on (w0 = 10,
sigma = 5, plus class balance) / off (class balance only)} x {elastic deformation on / off}, the
same time budget each. Overlap-tile check: a 4 x 4 mosaic of the val slices (2048 x 2048) predicted
from 508 px input tiles in a child process (peak RSS), compared with a direct forward pass around a
tile corner, and the gradient across tile boundaries against elsewhere.

Data: ../shared/data/isbi2012_em (or --data). Scratch files (checkpoints, PNG crop) go to --work.
Writes benchmarks/results/isbi2012_em.json and .md (with --quick: under --work instead).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biounet.checkpoint import load_checkpoint  # noqa: E402
from biounet.em.fit_em import SLICE_OUT_TILE, train_and_calibrate  # noqa: E402
from biounet.em.tiles import read_em_slices  # noqa: E402
from biounet.em.train_em import (  # noqa: E402
    EmTrainConfig,
    make_em_model,
    mean_scores,
    predict_interior,
    score_slices,
)
from biounet.models import count_parameters, preset  # noqa: E402
from common import RESULTS, SHARED_DATA, require, update_results  # noqa: E402
from isbi2012_em_tiling import overlap_tile_check  # noqa: E402

NAME = "isbi2012_em"
TRAIN, HELD, VAL = list(range(0, 20)), list(range(20, 25)), list(range(25, 30))
ARMS = {  # name -> (weight map border term, elastic deformation)
    "weightmap_elastic": (True, True),
    "weightmap_only": (True, False),
    "elastic_only": (False, True),
    "neither": (False, False),
}
KEYS = ("pixel_error", "rand_error", "adapted_rand_error", "v_rand", "v_info")


def run_arm(
    name: str,
    data: dict[str, np.ndarray],
    args: argparse.Namespace,
    minutes: float | None = None,
    ck_name: str | None = None,
) -> dict[str, Any]:
    """Train one arm on slices 00-19 (``minutes``, default --minutes-per-run), pick its threshold on
    20-24; checkpoint to --work/<ck_name or name>.pt."""
    border, elastic = ARMS[name]
    cfg = EmTrainConfig(
        out_tile=args.out_tile,
        lr=args.lr,
        minutes=args.minutes_per_run if minutes is None else minutes,
        max_iters=args.max_iters,
        elastic=elastic,
        seed=args.seed,
        precision=args.precision,
    )
    fit = train_and_calibrate(
        (data["train_img"], data["train_int"]),
        (data["held_img"], data["held_int"]),
        border,
        args.base_width,
        cfg,
        args.work / f"{ck_name or name}.pt",
        {"arm": name},
        tuple(args.thresholds),
    )
    rows, thr, sweep, held = fit.rows, fit.threshold, fit.sweep, fit.scores
    logging.info("%s: %d iters, held-out v_rand %.4f at %.2f", name, len(rows), held["v_rand"], thr)
    return {
        "weight_map": border,
        "elastic": elastic,
        "iterations": len(rows),
        "train_seconds": rows[-1]["seconds"],
        "loss_first_20": float(np.mean([r["loss"] for r in rows[:20]])),
        "loss_last_20": float(np.mean([r["loss"] for r in rows[-20:]])),
        "membrane_threshold": thr,
        "threshold_sweep_v_rand": sweep,
        "held_out_20_24": {k: held[k] for k in KEYS},
    }


def evaluate_val(ck: Path, data: dict[str, np.ndarray], args: argparse.Namespace) -> dict:
    """The one evaluation on slices 25-29: per slice and mean."""
    c = load_checkpoint(ck)
    model, thr = c.build(), c.extra["membrane_threshold"]
    t0 = time.perf_counter()
    probs = [predict_interior(model, im, SLICE_OUT_TILE, args.precision) for im in data["val_img"]]
    seconds = (time.perf_counter() - t0) / len(probs)
    rows = score_slices(probs, data["val_int"], thr)
    mean = mean_scores(rows)
    return {
        "slices": VAL,
        "arm": c.extra["arm"],
        "membrane_threshold": thr,
        **{k: mean[k] for k in KEYS},
        "per_slice": {s: {k: r[k] for k in KEYS} for s, r in zip(VAL, rows, strict=True)},
        "predict_seconds_per_slice": seconds,
        "note": "v_rand / v_info: foreground-restricted, without the leaderboard's border thinning; "
        "rand_error: classic 1 - Rand index; adapted_rand_error = 1 - v_rand",
    }


def report(results: Path) -> None:
    d = json.loads((results / f"{NAME}.json").read_text())
    s = d["settings"]
    lines = [
        "# ISBI 2012 EM membranes: the paper's unpadded U-Net",
        "",
        f"commit `{d['commit']}`, {d['machine']}",
        "",
        f"Model `paper_valid_small` at base width {s['base_width']} ({s['parameters']:,} parameters), "
        f"trained on slices 00-19, {s['minutes_per_run']} min (max_iters {s['max_iters']}) per arm, "
        f"output tiles {s['out_tile']} px, batch 1, Adam {s['lr']} cosine, {s['precision']}. "
        "Threshold and arm chosen on slices 20-24; the chosen model scored once on 25-29.",
    ]
    if "val" in d:
        v = d["val"]
        lines += ["", "## Val (slices 25-29, mean)", ""]
        lines += [
            "| arm | threshold | pixel error | rand error | 1 - V_rand | V_rand | V_info |",
            "|---|---|---|---|---|---|---|",
            f"| {v['arm']} | {v['membrane_threshold']:.2f} | "
            + " | ".join(f"{v[k]:.4f}" for k in KEYS)
            + " |",
            "",
            v["note"],
        ]
    if "ablation" in d:
        lines += ["", "## Ablation (held-out slices 20-24, mean)", ""]
        lines += [
            "| arm | iters | loss first/last 20 | threshold | pixel error | rand error | 1 - V_rand "
            "| V_rand | V_info |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [arm_row(name, a, KEYS) for name, a in d["ablation"].items()]
    if "long_runs" in d:
        lr_ = d["long_runs"]
        v = lr_["val"]
        lines += ["", f"## Longer training ({lr_['minutes_per_run']} min per arm)", ""]
        lines += [
            "| arm | iters | loss first/last 20 | threshold | held-out pixel error | held-out V_rand |",
            "|---|---|---|---|---|---|",
        ]
        lines += [arm_row(n, a, ("pixel_error", "v_rand")) for n, a in lr_["arms"].items()]
        lines += [
            "",
            f"Chosen on 20-24: {v['arm']}; slices 25-29: V_rand {v['v_rand']:.4f}, "
            f"V_info {v['v_info']:.4f}, pixel error {v['pixel_error']:.4f}, "
            f"rand error {v['rand_error']:.4f} (threshold {v['membrane_threshold']:.2f}).",
        ]
    if "overlap_tile_2048" in d:
        o = d["overlap_tile_2048"]
        lines += ["", f"## Overlap-tile on a {o['image_side']} px mosaic", ""]
        lines += [f"- {k}: {val}" for k, val in o.items() if k != "image_side"]
    (results / f"{NAME}.md").write_text("\n".join(lines) + "\n")


def arm_row(name: str, a: dict[str, Any], keys: tuple[str, ...]) -> str:
    h = a["held_out_20_24"]
    return (
        f"| {name} | {a['iterations']} | {a['loss_first_20']:.3f} / {a['loss_last_20']:.3f} | "
        f"{a['membrane_threshold']:.2f} | " + " | ".join(f"{h[k]:.4f}" for k in keys) + " |"
    )


def load_data(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for part, idx in (("train", TRAIN), ("held", HELD), ("val", VAL)):
        out[f"{part}_img"], out[f"{part}_int"] = read_em_slices(root, idx)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "isbi2012_em")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_isbi2012"))
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results")
    ap.add_argument("--minutes-per-run", type=float, default=4.5)
    ap.add_argument("--max-iters", type=int, default=0, help="0 = only the time budget")
    ap.add_argument("--out-tile", type=int, default=260, help="training output tile side")
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--precision", default="fp32", help="fp32 (faster on this CPU), bf16, auto")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1 * i for i in range(1, 10)])
    ap.add_argument("--mosaic", type=int, default=4, help="mosaic of N x N val slices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny budget and model")
    ap.add_argument(
        "--long",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="only longer runs of --long-arms, MINUTES each (results key long_runs)",
    )
    ap.add_argument(
        "--long-arms", nargs="+", choices=list(ARMS), default=["weightmap_elastic", "neither"]
    )
    args = ap.parse_args(argv)
    args.thresholds = [round(t, 2) for t in args.thresholds]
    if args.quick:  # the same pipeline end to end, sized to a minute or two
        args.minutes_per_run, args.out_tile, args.thresholds = 0.1, 116, [0.3, 0.5, 0.7]
        args.base_width, args.mosaic = min(args.base_width, 8), 2
        args.max_iters = args.max_iters or 6
    if args.results is None:
        args.results = args.work / "results" if args.quick else RESULTS
    return args


def long_runs(data: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """The --long-arms trained for --long minutes each, the same protocol: the arm with the best
    held-out V_rand (slices 20-24) is scored once on 25-29."""
    runs = {
        name: run_arm(name, data, args, minutes=args.long, ck_name=f"long_{name}")
        for name in args.long_arms
    }
    best = max(runs, key=lambda n: runs[n]["held_out_20_24"]["v_rand"])
    val = evaluate_val(args.work / f"long_{best}.pt", data, args)
    return {"minutes_per_run": args.long, "arms": runs, "val": val}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = require(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    data = load_data(root)
    if args.long:
        update_results(NAME, "long_runs", long_runs(data, args), args.results)
        report(args.results)
        print((args.results / f"{NAME}.md").read_text())
        return
    n_params = count_parameters(
        make_em_model(preset("paper_valid_small", base_width=args.base_width), 0)
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("data", "work", "results")}
    update_results(NAME, "settings", settings | {"parameters": n_params}, args.results)
    ablation = {name: run_arm(name, data, args) for name in ARMS}
    update_results(NAME, "ablation", ablation, args.results)
    best = max(ablation, key=lambda n: ablation[n]["held_out_20_24"]["v_rand"])
    update_results(NAME, "val", evaluate_val(args.work / f"{best}.pt", data, args), args.results)
    check = overlap_tile_check(
        args.work / f"{best}.pt", root, VAL, args.mosaic, args.work, args.precision
    )
    update_results(NAME, "overlap_tile_2048", check, args.results)
    report(args.results)
    print((args.results / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
