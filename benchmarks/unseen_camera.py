"""Grey or colour on a camera neither model saw: the two-dataset fundus models on DRIVE.

generalization_holdout.py chose colour over grey for the two-dataset recipe on held-out images of
its two training cameras (Drishti-GS1, REFUGE Canon). DRIVE's 40 photographs (Canon CR5, 45 degree
field, 565 x 584 px; a diabetic-retinopathy screening population) come from a third camera. DRIVE
has no disc or cup masks, so this scores what can be checked without them:

- where each model puts the disc, against the vessel-density peak (the vessel masks blurred with a
  Gaussian of sigma 20 px, their maximum: the vessels converge at the disc); a disc not found
  (predict's flags) or whose centre lies more than MISS_PX (three quarters of a DRIVE disc's
  height) from it counts as misplaced. The peak is a proxy, not a label: read the overlays of the
  misplaced ones (written to --work);
- how many images predict flags as doubtful, and why;
- the vCDR each model measures (no reference: spread and the two models' differences only).

Both models are fundus_generalization.py's hold-out runs (``both_holdout_grey``,
``both_holdout_colour``: the same images, the same fifth held out, only grey vs colour), trained
there if missing (~22-27 min each). Writes benchmarks/results/fundus_unseen_camera.{json,md}.

    python benchmarks/unseen_camera.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.api import load_model  # noqa: E402
from biounet.data.folder import discover  # noqa: E402
from biounet.data.io import read_image, read_mask  # noqa: E402
from biounet.predict import NO_DISC_FLAGS, reported_measures, write_outputs  # noqa: E402
from common import RESULTS, SHARED_DATA, git_commit, machine, require  # noqa: E402
from fundus_generalization import train_run  # noqa: E402

MODELS = ("both_holdout_grey", "both_holdout_colour")
NAME = "fundus_unseen_camera"
SIGMA = 20.0  # px: the vessel blur that finds where they converge
MISS_PX = 64.0  # px: three quarters of a DRIVE disc's height (about 85 px)


def vessel_peak(vessels: np.ndarray, sigma: float = SIGMA) -> tuple[float, float]:
    """(row, col) of the densest vessel region: argmax of the vessel mask (H, W) bool blurred by
    a Gaussian of ``sigma`` px."""
    density = ndi.gaussian_filter(vessels.astype(np.float32), sigma)
    r, c = np.unravel_index(int(np.argmax(density)), density.shape)
    return float(r), float(c)


def disc_offset(disc: np.ndarray, peak: tuple[float, float]) -> tuple[float, float]:
    """(distance in px from the disc mask's (H, W) centroid to ``peak``, the disc's height in
    px); (nan, 0) for an empty mask."""
    rows, cols = np.nonzero(disc)
    if rows.size == 0:
        return float("nan"), 0.0
    height = float(rows.max() - rows.min() + 1)
    return math.hypot(rows.mean() - peak[0], cols.mean() - peak[1]), height


def misplaced(distance: float) -> bool:
    """No disc (distance NaN), or its centre farther than MISS_PX from the vessel peak."""
    return not math.isfinite(distance) or distance > MISS_PX


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-model totals of per-image rows {"stem", "distance", "height", "vcdr", "flags"}."""
    vcdr = [r["vcdr"] for r in rows if math.isfinite(r["vcdr"])]
    dist = [r["distance"] for r in rows if math.isfinite(r["distance"])]
    flags: dict[str, int] = {}
    for r in rows:
        for f in r["flags"]:
            flags[f] = flags.get(f, 0) + 1
    return {
        "n_images": len(rows),
        "disc_found": sum(math.isfinite(r["distance"]) for r in rows),
        "misplaced": sorted(r["stem"] for r in rows if misplaced(r["distance"])),
        "distance_median_px": statistics.median(dist) if dist else None,
        "flagged_doubtful": sorted(r["stem"] for r in rows if r["flags"]),
        "flag_counts": flags,
        "vcdr_median": statistics.median(vcdr) if vcdr else None,
        "vcdr_range": [min(vcdr), max(vcdr)] if vcdr else None,
    }


def score(model_path: Path, drive: Path, out: Path) -> list[dict[str, Any]]:
    """Each DRIVE image through the pipeline (flip + ROI-size TTA, ellipses, post-processing):
    one row per image; overlays into ``out``."""
    model = load_model(model_path, tta=True, fit_ellipse=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in discover(drive):
        image = read_image(sample.image)
        p = model.predict(image)
        peak = vessel_peak(read_mask(sample.masks["vessel"]))
        distance, height = disc_offset(p.masks["disc"], peak)
        if set(NO_DISC_FLAGS) & set(p.flags):  # whatever was segmented, it is no disc
            distance, height = math.nan, 0.0
        rows.append(
            {
                "stem": sample.stem,
                "distance": distance,
                "height": height,
                "peak": peak,
                "vcdr": float(reported_measures(p).get("vcdr", math.nan)),
                "flags": list(p.flags),
            }
        )
        write_outputs(out, sample.stem, image, p, model.labels)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Two-dataset fundus models on a camera neither saw (DRIVE, 40 photographs)",
        "",
        f"commit `{result['commit']}`, {result['machine']}, wall time {result['wall_time_s']:.0f} s",
        "",
        "No disc labels: the disc's place is checked against the vessel-density peak "
        f"(vessel masks blurred, sigma {SIGMA:g} px); misplaced = no disc found, or its centre "
        f"farther than {MISS_PX:g} px (three quarters of a DRIVE disc's height) from the peak. "
        "vCDR has no reference here. Overlays of every image in the work folder.",
        "",
        "| model | discs found | misplaced | median distance to the peak (px) | flagged doubtful "
        "| vCDR median [range] |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["models"].items():
        rng = s["vcdr_range"] or [float("nan")] * 2
        lines.append(
            f"| {name} | {s['disc_found']} / {s['n_images']} | {len(s['misplaced'])} "
            f"({', '.join(s['misplaced']) or '-'}) | {s['distance_median_px']:.1f} "
            f"| {len(s['flagged_doubtful'])} ({', '.join(s['flagged_doubtful']) or '-'}) "
            f"| {s['vcdr_median']:.3f} [{rng[0]:.2f}, {rng[1]:.2f}] |"
        )
    d = result["vcdr_colour_minus_grey"]
    lines += [
        "",
        f"vCDR colour - grey over the images where both measured one (n={d['n']}): median "
        f"{d['median']:+.3f}, median |difference| {d['median_abs']:.3f}, largest "
        f"|difference| {d['max_abs']:.3f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drive", type=Path, default=SHARED_DATA / "drive")
    ap.add_argument("--drishti", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--refuge", type=Path, default=SHARED_DATA / "refuge_canon512")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_generalization"))
    args = ap.parse_args()
    drive = require(args.drive)
    roots = {"drishti": require(args.drishti), "refuge": require(args.refuge)}
    train_args = argparse.Namespace(locator_draws=1600, roi_draws=4800, seed=0)
    t0 = time.perf_counter()
    per_model = {}
    for name in MODELS:
        ck = train_run(name, roots, args.work, train_args)
        per_model[name] = score(ck, drive, args.work / f"drive_{name}")
    grey, colour = ({r["stem"]: r["vcdr"] for r in per_model[m]} for m in MODELS)
    diff = [colour[s] - grey[s] for s in grey if math.isfinite(colour[s] + grey[s])]
    result = {
        "commit": git_commit(),
        "machine": machine(),
        "wall_time_s": time.perf_counter() - t0,
        "models": {m: summarise(rows) for m, rows in per_model.items()},
        "vcdr_colour_minus_grey": {
            "n": len(diff),
            "median": statistics.median(diff),
            "median_abs": statistics.median(abs(x) for x in diff),
            "max_abs": max(abs(x) for x in diff),
        },
        "per_image": per_model,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{NAME}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
