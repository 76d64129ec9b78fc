"""A lead, not an adoption: the grey locator with the colour crop model, composed without training.

On DRIVE (a camera neither two-dataset model saw; unseen_camera.py) the colour pipeline's one
clear failure was its locator (no disc found on a photograph the grey locator read right), while
on the training cameras' held-out images colour's crop model is the better one (cup +0.017 on
REFUGE; generalization_holdout.py). This bundles ``both_holdout_grey``'s locator with
``both_holdout_colour``'s crop model (same images, same hold-out: each stage reads its own
channels, so the parts combine as they are) and scores the hybrid as those scripts score their
models: on the 80 REFUGE and 10 Drishti-GS1 held-out training images, paired against each run,
and on DRIVE against the vessel-density peak. No rule was fixed before these numbers were seen,
so nothing is adopted here: a next step would train the hybrid as a recipe (a grey-locator
option) and judge it with a rule fixed first.

    python benchmarks/hybrid_locator.py   # after generalization_holdout.py (reuses its models)

Writes benchmarks/results/fundus_hybrid_locator.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.checkpoint import load_any, save_pipeline  # noqa: E402
from common import RESULTS, SHARED_DATA, git_commit, machine, require  # noqa: E402
from fundus_generalization import DRAWS, held_out_stems, train_run  # noqa: E402
from generalization_holdout import BASE, CANDIDATE, compare, held_out_scores  # noqa: E402
from unseen_camera import score, summarise  # noqa: E402

NAME = "fundus_hybrid_locator"
HYBRID = "hybrid_grey_locator_colour_roi"


def compose(grey_run: Path, colour_run: Path, out: Path) -> Path:
    """``out/fundus.pt``: the locator of ``grey_run`` and the crop model of ``colour_run``."""
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(load_any(colour_run / "fundus.pt").settings)
    settings["composed"] = {"locator": str(grey_run), "roi": str(colour_run)}
    parts = {"locator": grey_run / "locator" / "best.pt", "roi": colour_run / "roi" / "best.pt"}
    save_pipeline(out / "fundus.pt", parts, settings)
    return out / "fundus.pt"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Grey locator + colour crop model (composed, not trained): a lead",
        "",
        f"commit `{result['commit']}`, {result['machine']}",
        "",
        f"`{HYBRID}` = `{BASE}`'s locator + `{CANDIDATE}`'s crop model. Held-out training "
        "images: per-image means, hybrid - run with its 95 % bootstrap interval.",
        "",
        "| held-out images | measure | vs | run | hybrid | hybrid - run | 95 % interval |",
        "|---|---|---|---|---|---|---|",
    ]
    for ds, r in result["held_out"].items():
        for vs, comp in r.items():
            for key, p in comp["paired"].items():
                lo, hi = p["diff_ci95"]
                lines.append(
                    f"| {ds} | {key} | {vs} | {p['mean_a']:.4f} | {p['mean_b']:.4f} | "
                    f"{p['diff_mean']:+.4f} | [{lo:+.4f}, {hi:+.4f}] |"
                )
    lines += [
        "",
        "DRIVE (40, no disc labels; misplaced = no disc found or centre > 64 px from the "
        "vessel-density peak, as unseen_camera.py):",
        "",
        "| model | discs found | misplaced | flagged doubtful | vCDR median |",
        "|---|---|---|---|---|",
    ]
    for name, s in result["drive"].items():
        lines.append(
            f"| {name} | {s['disc_found']} / {s['n_images']} | "
            f"{len(s['misplaced'])} ({', '.join(s['misplaced']) or '-'}) | "
            f"{len(s['flagged_doubtful'])} ({', '.join(s['flagged_doubtful']) or '-'}) | "
            f"{s['vcdr_median']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drishti", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--refuge", type=Path, default=SHARED_DATA / "refuge_canon512")
    ap.add_argument("--drive", type=Path, default=SHARED_DATA / "drive")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_generalization"))
    args = ap.parse_args()
    args.locator_draws, args.roi_draws, args.seed = DRAWS[0], DRAWS[1], 0
    roots = {"drishti": require(args.drishti), "refuge": require(args.refuge)}
    drive = require(args.drive)
    t0 = time.perf_counter()
    cks = {name: train_run(name, roots, args.work, args) for name in (BASE, CANDIDATE)}
    cks[HYBRID] = compose(cks[BASE].parent, cks[CANDIDATE].parent, args.work / HYBRID)
    held = held_out_stems(BASE, roots, args)
    held_out = {
        ds: {n: compare(s[n], s[HYBRID]) for n in (CANDIDATE, BASE)}
        for ds, s in held_out_scores(cks, roots, held, args.work).items()
    }
    drive_rows = {n: score(ck, drive, args.work / f"drive_{n}") for n, ck in cks.items()}
    result = {
        "commit": git_commit(),
        "machine": machine(),
        "wall_time_s": time.perf_counter() - t0,
        "held_out": held_out,
        "drive": {n: summarise(rows) for n, rows in drive_rows.items()},
    }
    (RESULTS / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{NAME}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
