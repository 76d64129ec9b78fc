"""ISBI 2012 EM membranes with the paper's unpadded U-Net (``paper_valid_small``).

    python benchmarks/isbi2012_em.py                    # 4 x 4.5 min training + ~6 min: ~25 min
    python benchmarks/isbi2012_em.py --quick            # smoke test, ~1-2 min, results in --work
    python benchmarks/isbi2012_em.py --long 20          # two arms x 20 min more: key long_runs
    python benchmarks/isbi2012_em.py --long 60 --long-arms neither   # key long_runs_60min
    python benchmarks/isbi2012_em.py --rescore          # saved arms scored again, no training
    python benchmarks/isbi2012_em.py --refit 0          # the final: the best longer run's arm,
                                                        # thresholds and TTA, trained on 00-24

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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biounet.checkpoint import load_checkpoint  # noqa: E402
from biounet.em.fit_em import (  # noqa: E402
    SELECT,
    SLICE_OUT_TILE,
    calibrate,
    em_extra,
    train_and_calibrate,
    train_fresh,
)
from biounet.em.tiles import read_em_slices  # noqa: E402
from biounet.em.train_em import (  # noqa: E402
    EmTrainConfig,
    best_threshold,
    mean_scores,
    predict_interior,
    save_em_checkpoint,
    threshold_sweep,
)
from biounet.infer import pick_device  # noqa: E402
from biounet.models import build_model, count_parameters, preset  # noqa: E402
from common import RESULTS, SHARED_DATA, machine, require, update_results  # noqa: E402
from isbi2012_em_tiling import overlap_tile_check  # noqa: E402

NAME = "isbi2012_em"
TRAIN, HELD, VAL = list(range(0, 20)), list(range(20, 25)), list(range(25, 30))
ARMS = {  # name -> (weight map border term, elastic deformation)
    "weightmap_elastic": (True, True),
    "weightmap_only": (True, False),
    "elastic_only": (False, True),
    "neither": (False, False),
}
KEYS = (
    "pixel_error",
    "rand_error",
    "adapted_rand_error",
    "v_rand",
    "v_info",
    "v_rand_thinned",
    "v_info_thinned",
    "pixel_error_fscore",
)


def arm_config(args: argparse.Namespace, elastic: bool, minutes: float) -> EmTrainConfig:
    """The training settings every arm, longer run and refit shares, for ``minutes``."""
    return EmTrainConfig(
        out_tile=args.out_tile,
        lr=args.lr,
        minutes=minutes,
        max_iters=args.max_iters,
        elastic=elastic,
        seed=args.seed,
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
    )


def rows_summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Iterations, seconds and the mean loss of the first and last 20 iterations of a run."""
    return {
        "iterations": len(rows),
        "train_seconds": rows[-1]["seconds"],
        "loss_first_20": float(np.mean([r["loss"] for r in rows[:20]])),
        "loss_last_20": float(np.mean([r["loss"] for r in rows[-20:]])),
    }


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
    cfg = arm_config(args, elastic, args.minutes_per_run if minutes is None else minutes)
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
    logging.info(
        "%s: %d iters, held-out %s %.4f at %.2f", name, len(rows), SELECT, held[SELECT], thr
    )
    return {
        "weight_map": border,
        "elastic": elastic,
        **rows_summary(rows),
        "membrane_threshold": thr,
        "tta": fit.tta,
        "threshold_sweep_v_rand_thinned": sweep,
        "held_out_20_24": {k: held[k] for k in KEYS},
    }


def rescore_arm(arm: dict[str, Any], ck: Path, data: dict[str, np.ndarray], args) -> dict[str, Any]:
    """An arm trained earlier, its threshold and TTA chosen again on 20-24 with the current metrics
    (checkpoint rewritten with them); its training rows stay as they were."""
    c = load_checkpoint(ck)
    model = c.build().to(pick_device(args.device))
    fit = calibrate(
        model, (data["held_img"], data["held_int"]), args.precision, tuple(args.thresholds)
    )
    save_em_checkpoint(ck, model, SLICE_OUT_TILE, fit.threshold, em_extra(fit, c.extra))
    stale = ("threshold_sweep_v_rand", "membrane_threshold", "tta", "held_out_20_24")
    return {k: v for k, v in arm.items() if k not in stale} | {
        "membrane_threshold": fit.threshold,
        "tta": fit.tta,
        "threshold_sweep_v_rand_thinned": fit.sweep,
        "held_out_20_24": {k: fit.scores[k] for k in KEYS},
    }


def evaluate_val(ck: Path, data: dict[str, np.ndarray], args: argparse.Namespace) -> dict:
    """The one evaluation on slices 25-29: per slice and mean, at the thresholds (and TTA) stored
    in the checkpoint; each slice predicted once and scored once per threshold."""
    c = load_checkpoint(ck)
    model, tta = c.build().to(pick_device(args.device)), bool(c.extra.get("tta", False))
    thr, px_thr = c.extra["membrane_threshold"], c.extra["pixel_error_threshold"]
    f_thr = c.extra.get("pixel_fscore_threshold")  # absent in checkpoints from before it
    t0 = time.perf_counter()
    probs = [
        predict_interior(model, im, SLICE_OUT_TILE, args.precision, tta=tta)
        for im in data["val_img"]
    ]
    seconds = (time.perf_counter() - t0) / len(probs)
    chosen = {thr, px_thr} | ({f_thr} if f_thr is not None else set())
    sweep = threshold_sweep(probs, data["val_int"], tuple(set(args.thresholds) | chosen))
    means = {t: mean_scores(r) for t, r in sweep.items()}
    rows, mean = sweep[thr], means[thr]
    # the leaderboard's way, for comparison only: the best threshold on the scored slices themselves
    grid = {t: means[t] for t in args.thresholds}
    best_t = best_threshold(grid, SELECT)
    pooled = {t: m["pixel_error_fscore"] for t, m in means.items()}  # counts pooled: mean_scores
    return {
        "slices": VAL,
        "arm": c.extra["arm"],
        "membrane_threshold": thr,
        "tta": tta,
        **{k: mean[k] for k in KEYS},
        "pixel_error_fscore": pooled[thr],
        "pixel_error_threshold": px_thr,
        "pixel_error_at_own_threshold": means[px_thr]["pixel_error"],
        "pixel_fscore_threshold": f_thr,
        "pixel_error_fscore_at_own_threshold": None if f_thr is None else pooled[f_thr],
        "leaderboard_style_max_over_thresholds": {
            "threshold": best_t,
            "v_rand_thinned": grid[best_t]["v_rand_thinned"],
            "v_info_thinned": max(m["v_info_thinned"] for m in grid.values()),
            "pixel_error_fscore": min(pooled[t] for t in args.thresholds),
        },
        "per_slice": {s: {k: r[k] for k in KEYS} for s, r in zip(VAL, rows, strict=True)},
        "predict_seconds_per_slice": seconds,
        "note": "v_rand_thinned / v_info_thinned: foreground-restricted after border thinning (the "
        "challenge's final metrics) at the threshold chosen on 20-24; v_rand / v_info: the same "
        "without thinning; rand_error: classic 1 - Rand index; adapted_rand_error = 1 - v_rand; "
        "pixel_error: fraction of pixels mislabelled; pixel_error_fscore: the challenge's pixel "
        "error, 1 - F1 of cell interior with the 5 slices' pixels pooled (Fiji's PixelError). "
        "leaderboard_style_max_over_thresholds: the best threshold on 25-29 itself, as the "
        "leaderboard scored (optimistic; not a held-out number)",
    }


def report(results: Path) -> None:
    d = json.loads((results / f"{NAME}.json").read_text())
    lines = [
        "# ISBI 2012 EM membranes: the paper's unpadded U-Net",
        "",
        f"commit `{d['commit']}`, {d['machine']}",
    ]
    if "settings" in d:  # the ablation's settings (absent where only longer runs were made)
        s = d["settings"]
        lines += [
            "",
            f"Model `paper_valid_small` at base width {s['base_width']} ({s['parameters']:,} "
            f"parameters), trained on slices 00-19, {s['minutes_per_run']} min (max_iters "
            f"{s['max_iters']}) per arm, output tiles {s['out_tile']} px, batch "
            f"{s.get('batch_size', 1)}, Adam {s['lr']} cosine, {s['precision']}. Threshold and "
            "arm chosen on slices 20-24; the chosen model scored once on 25-29.",
        ]
    if "val" in d:
        v = d["val"]
        lines += ["", "## Val (slices 25-29, mean)", ""]
        lines += [
            "| arm | threshold | TTA | " + " | ".join(HEAD[k] for k in KEYS) + " |",
            "|---|---|---|" + "---|" * len(KEYS),
            f"| {v['arm']} | {v['membrane_threshold']:.2f} | {_on(v.get('tta'))} | "
            + " | ".join(f"{v[k]:.4f}" if k in v else "-" for k in KEYS)
            + " |",
            "",
            v["note"],
        ]
        if "pixel_error_at_own_threshold" in v:
            lb = v["leaderboard_style_max_over_thresholds"]
            lines += [
                "",
                f"- pixel error at its own threshold ({v['pixel_error_threshold']:.2f}, chosen on "
                f"20-24 by pixel error): {v['pixel_error_at_own_threshold']:.4f}",
                f"- leaderboard style (best threshold on 25-29 itself, optimistic): V_rand thinned "
                f"{lb['v_rand_thinned']:.4f} at {lb['threshold']:.2f}, V_info thinned "
                f"{lb['v_info_thinned']:.4f}",
            ]
        lines += fscore_lines(v)
    if "ablation" in d:
        lines += ["", "## Ablation (held-out slices 20-24, mean)", ""]
        lines += [
            "| arm | iters | loss first/last 20 | threshold | TTA | "
            + " | ".join(HEAD[k] for k in KEYS)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(KEYS),
        ]
        lines += [arm_row(name, a, KEYS) for name, a in d["ablation"].items()]
    for key in long_keys(d):
        lr_ = d[key]
        v = lr_["val"]
        tag = f", {lr_['tag']}" if lr_.get("tag") else ""
        lines += ["", f"## Longer training ({lr_['minutes_per_run']} min per arm{tag})", ""]
        if "setup" in lr_:
            u = lr_["setup"]
            lines += [
                f"Base width {u['base_width']} ({u['parameters']:,} parameters), batch "
                f"{u['batch_size']}, output tiles {u['out_tile']} px, Adam {u['lr']} cosine, "
                f"{u['precision']}, on {u['device_name']}.",
                "",
            ]
        if lr_.get("note"):
            lines += [lr_["note"], ""]
        lines += [
            "| arm | iters | loss first/last 20 | threshold | TTA | held-out pixel error "
            "| held-out V_rand | held-out V_rand thinned |",
            "|---|---|---|---|---|---|---|---|",
        ]
        short = ("pixel_error", "v_rand", "v_rand_thinned")
        lines += [arm_row(n, a, short) for n, a in lr_["arms"].items()]
        lines += [
            "",
            f"Chosen on 20-24: {v['arm']}; slices 25-29: V_rand thinned "
            f"{v['v_rand_thinned']:.4f}, V_info thinned {v['v_info_thinned']:.4f}, "
            f"V_rand {v['v_rand']:.4f}, "
            f"pixel error {v['pixel_error']:.4f}, rand error {v['rand_error']:.4f} "
            f"(threshold {v['membrane_threshold']:.2f}, TTA {_on(v.get('tta'))}).",
        ]
        if "pixel_error_at_own_threshold" in v:
            lines += [
                f"Pixel error at its own threshold ({v['pixel_error_threshold']:.2f}, chosen on "
                f"20-24): {v['pixel_error_at_own_threshold']:.4f}; leaderboard style (best "
                f"threshold on 25-29 itself, optimistic): V_rand thinned "
                f"{v['leaderboard_style_max_over_thresholds']['v_rand_thinned']:.4f}."
            ]
        lines += fscore_lines(v)
    for key in (k for k in d if k.startswith("refit_00_24")):
        r, v = d[key], d[key]["val"]
        tag = f", {r['tag']}" if r.get("tag") else ""
        lines += ["", f"## Final refit on slices 00-24 ({r['minutes_per_run']} min{tag})", ""]
        lines += [
            f"{r['arm']}, {r['iterations']} iterations (loss first / last 20: "
            f"{r['loss_first_20']:.3f} / {r['loss_last_20']:.3f}); thresholds and TTA from "
            f"{r['source']} (chosen on 20-24). Slices 25-29: V_rand thinned "
            f"{v['v_rand_thinned']:.4f}, V_info thinned {v['v_info_thinned']:.4f}, V_rand "
            f"{v['v_rand']:.4f}, pixel error {v['pixel_error']:.4f} (threshold "
            f"{v['membrane_threshold']:.2f}, TTA {_on(v.get('tta'))}), pixel error at its own "
            f"threshold ({v['pixel_error_threshold']:.2f}): "
            f"{v['pixel_error_at_own_threshold']:.4f}."
        ]
        lines += fscore_lines(v)
    if "watershed" in d:
        lines += watershed_lines(d["watershed"])
    if "overlap_tile_2048" in d:
        o = d["overlap_tile_2048"]
        lines += ["", f"## Overlap-tile on a {o['image_side']} px mosaic", ""]
        lines += [f"- {k}: {val}" for k, val in o.items() if k != "image_side"]
    (results / f"{NAME}.md").write_text("\n".join(lines) + "\n")


def fscore_lines(v: dict[str, Any]) -> list[str]:
    """The challenge's pixel error (1 - F1 of cell interior, slices pooled) of a val section."""
    if v.get("pixel_error_fscore_at_own_threshold") is None:
        return []
    lb = v["leaderboard_style_max_over_thresholds"]["pixel_error_fscore"]
    return [
        "",
        f"Challenge pixel error (1 - F1 of cell interior, Fiji's PixelError): "
        f"**{v['pixel_error_fscore_at_own_threshold']:.4f}** at its own threshold "
        f"({v['pixel_fscore_threshold']:.2f}, chosen on 20-24), {v['pixel_error_fscore']:.4f} at "
        f"the V_rand one; leaderboard style (lowest over thresholds on 25-29 itself): {lb:.4f}.",
    ]


def watershed_lines(w: dict[str, Any]) -> list[str]:
    """The markdown section of benchmarks/isbi2012_watershed.py's results."""
    cols = ("v_rand_thinned", "v_info_thinned", "v_rand", "v_info", "rand_error")
    h, v = w["held_out_20_24"], w["val"]
    b = h["watershed_best"]

    def row(name: str, r: dict[str, Any]) -> str:
        return f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in cols) + " |"

    setting = (
        f"sigma {b['sigma']:g}, seed > {b['seed_threshold']:g}, seeds >= {b['min_seed_px']} px"
    )
    return [
        "",
        f"## Cells by seeded watershed instead of a threshold (`{w['checkpoint']}`, TTA "
        f"{_on(w.get('tta'))})",
        "",
        "| slices, cells by | " + " | ".join(HEAD[k] for k in cols) + " |",
        "|---|" + "---|" * len(cols),
        row(f"20-24, threshold {h['threshold']['membrane_threshold']:.2f}", h["threshold"]),
        row(f"20-24, watershed ({setting}; best of {len(h['grid'])})", b),
        row(f"**25-29**, threshold {v['threshold']['membrane_threshold']:.2f}", v["threshold"]),
        row("**25-29**, watershed (the setting chosen on 20-24)", v["watershed"]),
        "",
        w["note"],
    ]


HEAD = {
    "pixel_error": "pixel error",
    "rand_error": "rand error",
    "adapted_rand_error": "1 - V_rand",
    "v_rand": "V_rand",
    "v_info": "V_info",
    "v_rand_thinned": "V_rand thinned",
    "v_info_thinned": "V_info thinned",
    "pixel_error_fscore": "challenge pixel error",
}


def _on(flag: bool | None) -> str:
    return "on" if flag else "off"


def arm_row(name: str, a: dict[str, Any], keys: tuple[str, ...]) -> str:
    h = a["held_out_20_24"]
    return (
        f"| {name} | {a['iterations']} | {a['loss_first_20']:.3f} / {a['loss_last_20']:.3f} | "
        f"{a['membrane_threshold']:.2f} | {_on(a.get('tta'))} | "
        + " | ".join(f"{h[k]:.4f}" if k in h else "-" for k in keys)
        + " |"
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
    ap.add_argument("--batch-size", type=int, default=1, help="training tiles per step")
    ap.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    ap.add_argument(
        "--tag",
        default="",
        help="name of a longer run's setup (e.g. gpu_w64): results key long_runs_<MINUTES>min_<TAG>",
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny budget and model")
    ap.add_argument(
        "--long",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="only longer runs of --long-arms, MINUTES each (results key long_runs, or "
        "long_runs_<MINUTES>min for other budgets than 20)",
    )
    ap.add_argument(
        "--long-arms", nargs="+", choices=list(ARMS), default=["weightmap_elastic", "neither"]
    )
    ap.add_argument(
        "--refit",
        type=float,
        default=None,
        metavar="MINUTES",
        help="only the final refit: the best longer run's arm, thresholds and TTA, its model "
        "trained again on slices 00-24 (MINUTES; 0 = that run's budget), scored on 25-29",
    )
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="no training: the arms in the results file, from their checkpoints in --work, get "
        "threshold and TTA chosen again on 20-24 and the val scores again (after a metric change)",
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


def long_key(minutes: float, tag: str = "") -> tuple[str, str]:
    """-> (results key, checkpoint prefix) of the longer runs of ``minutes`` per arm (and setup
    ``tag``); 20 min untagged keeps the first names (key long_runs, long_<arm>.pt) so earlier
    results stay readable."""
    if tag:
        return f"long_runs_{minutes:g}min_{tag}", f"long{minutes:g}_{tag}_"
    if minutes == 20:
        return "long_runs", "long_"
    return f"long_runs_{minutes:g}min", f"long{minutes:g}_"


def n_parameters(base_width: int) -> int:
    """Parameters of ``paper_valid_small`` at ``base_width`` (1 in, 2 out)."""
    return count_parameters(build_model(preset("paper_valid_small", base_width=base_width)))


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """What a longer run was trained with, beyond the arm: model width and size, tiles, optimiser,
    precision and the device (with its name where it is a GPU)."""
    device = pick_device(args.device)
    return {
        "base_width": args.base_width,
        "parameters": n_parameters(args.base_width),
        "batch_size": args.batch_size,
        "out_tile": args.out_tile,
        "lr": args.lr,
        "precision": args.precision,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else machine(),
    }


def long_keys(d: dict[str, Any]) -> list[str]:
    """The results' longer-run sections, shortest budget first."""
    keys = [k for k in d if k.startswith("long_runs")]
    return sorted(keys, key=lambda k: d[k]["minutes_per_run"])


def long_runs(data: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """The --long-arms trained for --long minutes each, the same protocol: the arm with the best
    held-out V_rand (slices 20-24) is scored once on 25-29."""
    prefix = long_key(args.long, args.tag)[1]
    runs = {
        name: run_arm(name, data, args, minutes=args.long, ck_name=f"{prefix}{name}")
        for name in args.long_arms
    }
    best = max(runs, key=lambda n: runs[n]["held_out_20_24"][SELECT])
    val = evaluate_val(args.work / f"{prefix}{best}.pt", data, args)
    return {
        "minutes_per_run": args.long,
        "checkpoint_prefix": prefix,
        "tag": args.tag,
        "setup": setup(args),
        "arms": runs,
        "val": val,
    }


def refit_source(d: dict[str, Any], tag: str = "") -> tuple[str, dict[str, Any]]:
    """The longer run of setup ``tag`` (--tag; "" = the untagged CPU runs) whose chosen arm scored
    the best held-out (20-24) V_rand thinned: (its results key, its section). Chosen on slices
    00-24 only."""
    keys = [k for k in long_keys(d) if d[k].get("tag", "") == tag]
    if not keys:
        raise SystemExit(
            f"--refit: no longer runs tagged {tag!r} in the results yet (--long first)"
        )

    def held(k: str) -> float:
        arms = d[k]["arms"]
        return max(a["held_out_20_24"][SELECT] for a in arms.values())

    best = max(keys, key=held)
    return best, d[best]


def refit_key(tag: str) -> str:
    """The results key (and checkpoint prefix) of the refit of setup ``tag``: a GPU refit never
    replaces the CPU one."""
    return f"refit_00_24_{tag}" if tag else "refit_00_24"


def refit(data: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """The issue's final protocol: the arm, budget, membrane thresholds and TTA chosen on slices
    20-24 by the best longer run (``refit_source``), the model trained again on all of slices
    00-24 (nothing held out: the choices are kept, not re-made) and scored once on 25-29."""
    d = json.loads((args.results / f"{NAME}.json").read_text())
    key, src = refit_source(d, args.tag)
    arm = src["val"]["arm"]
    for k in ("base_width", "batch_size", "out_tile", "lr"):  # trained as the source was
        setattr(args, k, src.get("setup", {}).get(k, getattr(args, k)))
    source_ck = load_checkpoint(args.work / f"{src.get('checkpoint_prefix', 'long_')}{arm}.pt")
    border, elastic = ARMS[arm]
    minutes = args.refit or src["minutes_per_run"]
    train = (
        np.concatenate([data["train_img"], data["held_img"]]),
        np.concatenate([data["train_int"], data["held_int"]]),
    )
    model, rows = train_fresh(train, border, args.base_width, arm_config(args, elastic, minutes))
    ck = args.work / f"{refit_key(args.tag)}_{arm}.pt"
    extra = {**source_ck.extra, "arm": arm, "refit_from": key}
    save_em_checkpoint(ck, model, SLICE_OUT_TILE, extra["membrane_threshold"], extra)
    return {
        "source": key,
        "arm": arm,
        "tag": args.tag,
        "train_slices": TRAIN + HELD,
        "minutes_per_run": minutes,
        **rows_summary(rows),
        "val": evaluate_val(ck, data, args),
        "note": f"arm, thresholds and TTA as chosen on 20-24 by {key} (its model trained on "
        "00-19); this model trained on 00-24 with them, scored once on 25-29",
    }


def rescore(data: dict[str, np.ndarray], args: argparse.Namespace) -> None:
    """--rescore: both protocols (ablation -> val, longer runs -> their val) and the refit, from
    their checkpoints in --work; a section with a checkpoint missing is kept as it was."""
    d = json.loads((args.results / f"{NAME}.json").read_text())
    sections = [("ablation", "", d["ablation"])] if "ablation" in d else []
    sections += [(k, d[k].get("checkpoint_prefix", "long_"), d[k]["arms"]) for k in long_keys(d)]
    for key, prefix, arms in sections:
        cks = {n: args.work / f"{prefix}{n}.pt" for n in arms}
        missing = [str(c) for c in cks.values() if not c.is_file()]
        if missing:
            logging.info("%s kept as it was: no checkpoint %s", key, ", ".join(missing))
            continue
        arms = {n: rescore_arm(a, cks[n], data, args) for n, a in arms.items()}
        best = max(arms, key=lambda n: arms[n]["held_out_20_24"][SELECT])
        val = evaluate_val(cks[best], data, args)
        if key == "ablation":
            update_results(NAME, "ablation", arms, args.results)
            update_results(NAME, "val", val, args.results)
        else:
            update_results(NAME, key, d[key] | {"arms": arms, "val": val}, args.results)
    for rkey in (k for k in d if k.startswith("refit_00_24")):
        rescore_refit(rkey, data, args)


def rescore_refit(rkey: str, data: dict[str, np.ndarray], args: argparse.Namespace) -> None:
    """A refit's val scored again, its thresholds and TTA taken again from its source run's
    checkpoint (chosen on 20-24); kept as it was where a checkpoint is gone."""
    d = json.loads((args.results / f"{NAME}.json").read_text())
    r = d[rkey]
    refit_ck = args.work / f"{rkey}_{r['arm']}.pt"
    if refit_ck.is_file():
        src = d[r["source"]]
        source_ck = args.work / f"{src.get('checkpoint_prefix', 'long_')}{r['arm']}.pt"
        if source_ck.is_file():
            c, extra = load_checkpoint(refit_ck), load_checkpoint(source_ck).extra
            extra = {**c.extra, **{k: v for k, v in extra.items() if k != "arm"}}
            model = c.build()
            save_em_checkpoint(refit_ck, model, SLICE_OUT_TILE, extra["membrane_threshold"], extra)
            update_results(
                NAME, rkey, r | {"val": evaluate_val(refit_ck, data, args)}, args.results
            )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = require(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    data = load_data(root)
    if args.rescore:
        rescore(data, args)
        report(args.results)
        print((args.results / f"{NAME}.md").read_text())
        return
    if args.refit is not None:
        update_results(NAME, refit_key(args.tag), refit(data, args), args.results)
        report(args.results)
        print((args.results / f"{NAME}.md").read_text())
        return
    if args.long:
        update_results(NAME, long_key(args.long, args.tag)[0], long_runs(data, args), args.results)
        report(args.results)
        print((args.results / f"{NAME}.md").read_text())
        return
    n_params = n_parameters(args.base_width)
    settings = {k: v for k, v in vars(args).items() if k not in ("data", "work", "results")}
    update_results(NAME, "settings", settings | {"parameters": n_params}, args.results)
    ablation = {name: run_arm(name, data, args) for name in ARMS}
    update_results(NAME, "ablation", ablation, args.results)
    best = max(ablation, key=lambda n: ablation[n]["held_out_20_24"][SELECT])
    update_results(NAME, "val", evaluate_val(args.work / f"{best}.pt", data, args), args.results)
    check = overlap_tile_check(
        args.work / f"{best}.pt", root, VAL, args.mosaic, args.work, args.precision
    )
    update_results(NAME, "overlap_tile_2048", check, args.results)
    report(args.results)
    print((args.results / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
