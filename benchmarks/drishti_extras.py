"""Drishti-GS1 extras: how well the uncertainty score finds the worst cases, how calibrated the
probabilities are, a screenshot of the evaluation report, and the nnU-Net round trip.

    python benchmarks/drishti_extras.py --checkpoint /tmp/biounet_bench_fundus/final_run/fundus.pt --ellipse

1. ``evaluate --uncertainty --tta`` (post-processing on; ``--ellipse`` as the final pipeline of
   fundus_drishti.json) on the test split: AUROC of the uncertainty score for the images with Dice
   below 0.8 (mean over labels, and per label), Spearman of score and Dice, ECE per label.
2. A headless-chromium screenshot of that report.html (first ``--height`` px at ``--width`` px,
   palette PNG) to <work>/drishti_report.png (never committed: it shows crops of the research-only
   dataset). The report embeds 256 px case thumbnails and
   plots only; the script checks that and lists every embedded image's size.
3. The dataset exported as an nnU-Net v2 raw dataset and imported back, every image and mask
   compared with the original as decoded pixel arrays.

Writes <results>/drishti_extras.json and .md (default benchmarks/results). The evaluation and the
nnU-Net folders go to --work (default /tmp/biounet_drishti_extras); nothing is copied from the data
into the repository. --data takes any biounet dataset folder with a test split (the tests use a
tiny synthetic one).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.data.folder import discover, read_splits  # noqa: E402
from biounet.data.nnunet import folder_to_nnunet, nnunet_to_folder  # noqa: E402
from biounet.evaluate import evaluate_checkpoint  # noqa: E402
from biounet.predictor import PredictOptions  # noqa: E402
from common import RESULTS, SHARED_DATA, require, update_results  # noqa: E402
from headless import CHROMIUM, console_lines, run_chromium  # noqa: E402

NAME = "drishti_extras"
THUMB_MAX = 256  # case thumbnails in the report (biounet.viz.contour_thumbnail's side)
SHOT_MAX_BYTES = 500_000


def evaluation(checkpoint: Path, data: Path, out: Path, ellipse: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    s = evaluate_checkpoint(
        checkpoint,
        data,
        "test",
        out,
        PredictOptions(tta=True, fit_ellipse=ellipse),
        uncertainty=True,
    )
    seconds = time.perf_counter() - t0
    labels = list(s["labels"])
    return {
        "checkpoint": str(checkpoint),
        "n_images": s["n_images"],
        "settings": {"tta": True, "postprocess": True, "ellipse": ellipse, "threshold": 0.5},
        "dice": {
            lb: {k: s["labels"][lb][f"dice_{k}"] for k in ("mean", "median", "min")}
            for lb in labels
        },
        "n_dice_below": {
            k: v["n_below"] for k, v in s["uncertainty"].items() if isinstance(v, dict)
        },
        "ece": {lb: s["labels"][lb]["ece"] for lb in labels},
        "calibration": s["calibration"],
        "uncertainty": s["uncertainty"],
        "seconds": seconds,
        "seconds_cover": "evaluate with TTA and the uncertainty views (4 x the predictions), "
        "metrics, thumbnails and report",
    }


def embedded_images(page: str) -> list[dict[str, Any]]:
    """Every <img> the report embeds: its alt text and decoded size."""
    out = []
    for uri, alt in re.findall(
        r'<img [^>]*src="data:image/png;base64,([^"]+)" alt="([^"]*)"', page
    ):
        with Image.open(BytesIO(base64.b64decode(uri))) as im:
            out.append({"alt": alt, "size": list(im.size)})
    return out


def screenshot(report: Path, dest: Path, work: Path, width: int, height: int) -> dict[str, Any]:
    """The first ``height`` px of ``report`` at ``width`` px, as a palette PNG at ``dest``."""
    images = embedded_images(report.read_text(encoding="utf-8"))
    plots = ("training curves", "reliability diagram")
    too_big = [i for i in images if i["alt"] not in plots and max(i["size"]) > THUMB_MAX]
    if too_big:
        raise SystemExit(f"{report}: images larger than thumbnails embedded: {too_big}")
    raw = work / "report_screenshot_raw.png"
    profile = work / "chromium_profile"
    shutil.rmtree(profile, ignore_errors=True)
    size = [f"--window-size={width},{height}", "--force-device-scale-factor=1", "--hide-scrollbars"]
    r = run_chromium(profile, report.as_uri(), *size, f"--screenshot={raw}", timeout=120)
    if r.returncode != 0 or not raw.is_file():
        raise SystemExit(f"chromium failed ({r.returncode}): {r.stderr[-1500:]}")
    console = console_lines(r.stderr)
    with Image.open(raw) as im:
        rgb = im.convert("RGB")
    for colours in (256, 128, 64):  # palette PNG: text and plots stay sharp, thumbnails dithered
        rgb.quantize(colours).save(dest, optimize=True)
        if dest.stat().st_size <= SHOT_MAX_BYTES:
            break
    return {
        "file": dest.name,
        "viewport_px": [width, height],
        "bytes": dest.stat().st_size,
        "palette_colours": colours,
        "console_messages": console,
        "embedded_images": images,
        "note": f"the report's case thumbnails are at most {THUMB_MAX} px (crops around the disc); "
        "no full-resolution dataset image is embedded",
    }


def pixels(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


def same(a: Path, b: Path) -> bool:
    (ma, xa), (mb, xb) = pixels(a), pixels(b)
    return ma == mb and xa.dtype == xb.dtype and np.array_equal(xa, xb)


def round_trip(data: Path, work: Path) -> dict[str, Any]:
    """biounet folder -> nnU-Net v2 raw dataset -> biounet folder, compared pixel by pixel."""
    raw, back = work / "nnUNet_raw", work / "from_nnunet"
    for d in (raw, back):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    ds = folder_to_nnunet(data, raw, 501, "DrishtiGS1")
    nnunet_to_folder(ds, back)
    seconds = time.perf_counter() - t0
    samples = discover(data)
    images_same, masks, masks_same, differ = 0, 0, 0, []
    for s in samples:
        ok = same(s.image, back / "images" / f"{s.stem}.png")
        images_same += ok
        for lb, path in s.masks.items():
            masks += 1
            m_ok = same(path, back / "masks" / lb / f"{s.stem}.png")
            masks_same += m_ok
            ok &= m_ok
        if not ok:
            differ.append(s.stem)
    before, after = read_splits(data) or {}, read_splits(back) or {}
    meta = json.loads((ds / "dataset.json").read_text())
    keys = ("channel_names", "labels", "regions_class_order", "numTraining", "file_ending")
    return {
        "n_images": len(samples),
        "images_identical": images_same,
        "n_masks": masks,
        "masks_identical": masks_same,
        "differing_images": differ[:20],
        "test_split_identical": sorted(before.get("test", [])) == sorted(after.get("test", [])),
        "n_train_nnunet": len(after.get("train", [])),
        "n_test_nnunet": len(after.get("test", [])),
        "dataset_json": {k: meta[k] for k in keys if k in meta},
        "compared": "decoded pixel arrays (PIL mode, dtype, shape and every value) of the original "
        "files and of the files written back from the nnU-Net dataset",
        "seconds": seconds,
    }


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Drishti-GS1 extras: uncertainty, calibration, report, nnU-Net round trip",
        "",
        f"commit `{data.get('commit')}`, {data.get('machine')}",
    ]
    if "evaluation" in data:
        e = data["evaluation"]
        u = e["uncertainty"]
        lines += [
            "",
            f"## Test split ({e['n_images']} images), {e['settings']}",
            "",
            f"Uncertainty score: {u['score']}. Positives: images with Dice < {u['dice_below']}.",
            "",
            "| Dice of | score | images below | AUROC | Spearman (score, Dice) |",
            "|---|---|---|---|---|",
        ]
        for k, v in u.items():
            if isinstance(v, dict):
                lines.append(
                    f"| {k} | {v['score']} | {v['n_below']} of {v['n_images']} | "
                    f"{fmt(v['auroc'])} | {fmt(v['spearman_vs_dice'])} |"
                )
        lines += ["", "| label | Dice mean | Dice min | ECE |", "|---|---|---|---|"]
        for lb, d in e["dice"].items():
            lines.append(f"| {lb} | {d['mean']:.4f} | {d['min']:.4f} | {e['ece'][lb]:.4f} |")
        c = e["calibration"]
        lines += ["", f"ECE: {c['ece_bins']} bins; {c['pixels']}. {e['seconds']:.0f} s."]
    if "screenshot" in data:
        s = data["screenshot"]
        shot = f"{s['viewport_px']} px, {s['bytes']} bytes, {s['palette_colours']} colours"
        console = f"console messages: {len(s['console_messages'])}"
        lines += [
            "",
            f"## Report screenshot: `{s['file']}`",
            "",
            f"{shot}; {console}. {s['note']}.",
        ]
    if "nnunet_round_trip" in data:
        r = data["nnunet_round_trip"]
        lines += [
            "",
            "## nnU-Net v2 round trip (biounet -> nnU-Net raw -> biounet)",
            "",
            f"- images identical: {r['images_identical']} of {r['n_images']}",
            f"- masks identical: {r['masks_identical']} of {r['n_masks']}",
            f"- test split identical: {r['test_split_identical']} "
            f"({r['n_train_nnunet']} imagesTr, {r['n_test_nnunet']} imagesTs)",
            f"- dataset.json labels: `{json.dumps(r['dataset_json'].get('labels'))}`",
            f"- compared: {r['compared']}",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", type=Path, required=True, help="fundus.pt or any checkpoint")
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_drishti_extras"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--ellipse", action="store_true", help="fit ellipses (fundus pipeline)")
    ap.add_argument("--steps", default="eval,screenshot,nnunet", help="comma-separated subset")
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--height", type=int, default=2000)
    args = ap.parse_args()
    data = require(args.data)
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint")
    steps = set(args.steps.split(","))
    args.work.mkdir(parents=True, exist_ok=True)

    def save(key: str, value: Any) -> None:
        update_results(NAME, key, value | {"data": str(data)}, args.results)
        print(f"{key}: done", flush=True)

    report = args.work / "eval" / "report.html"
    if "eval" in steps:
        save("evaluation", evaluation(args.checkpoint, data, args.work / "eval", args.ellipse))
    if "screenshot" in steps:
        if not CHROMIUM.is_file():
            print(f"{CHROMIUM} not found: no screenshot", file=sys.stderr)
        elif not report.is_file():
            print(f"{report} not found: run the eval step first", file=sys.stderr)
        else:
            # into the scratch folder, not the repository: its thumbnails are crops of research-only data
            dest = args.work / "drishti_report.png"
            save("screenshot", screenshot(report, dest, args.work, args.width, args.height))
    if "nnunet" in steps:
        save("nnunet_round_trip", round_trip(data, args.work))
    path = args.results / f"{NAME}.json"
    (args.results / f"{NAME}.md").write_text(markdown(json.loads(path.read_text())))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
