"""Prediction of large images in windows (``biounet predict --tile``): peak memory and time of
one large image whole vs in windows, and what windows change in accuracy on real images.

    python benchmarks/predict_tiles.py [--sides 1024 2048 4096] [--drive-run RUN]

Memory: for each side S, an untrained ``small`` disc + cup U-Net whose images are prepared at S
px (what predict does with memory does not depend on the weights) predicts one S x S synthetic
fundus PNG with ``--tile 0`` (one forward pass of the whole image) and ``--tile 512`` (what
``--tile auto``, the default, does above 1024 px), each in a fresh process (peak RSS =
getrusage(RUSAGE_CHILDREN).ru_maxrss, wall time from process start, so imports included), bf16
where the CPU has it, the machine's threads.

Accuracy (with ``--drive-run``, a DRIVE run folder of ``benchmarks/drive_vessels.py``, e.g.
``/tmp/biounet_bench_drive/run_patch192``): its best.pt on the 20 DRIVE test images (576 px)
whole and in windows of several sides; F1 and AUC inside the field of view, as drive_vessels.py
scores them. Writes benchmarks/results/predict_tiles.json and .md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, machine, update_results  # noqa: E402
from drive_vessels import fov_scores, predict_test  # noqa: E402
from predict_memory import in_wrapper, write_checkpoint  # noqa: E402

NAME = "predict_tiles"
WINDOW = 512
DRIVE_TILES = (0, 384, 288, 192)  # 0: whole


def memory_runs(sides: list[int], scratch: Path) -> dict[str, Any]:
    """Peak RSS and seconds of one S x S image, whole and in ``WINDOW`` windows, per side."""
    from biounet.data.synthetic import synthetic_fundus

    out: dict[str, Any] = {}
    for side in sides:
        folder = scratch / f"image_{side}"
        folder.mkdir(parents=True, exist_ok=True)
        img_path = folder / "fundus.png"
        if not img_path.is_file():
            img, _, _ = synthetic_fundus(np.random.default_rng(side), side, side)
            Image.fromarray(img).save(img_path)
        ck = write_checkpoint(scratch / f"small_{side}.pt", side)
        for tile in (0, WINDOW):
            pred = scratch / f"pred_{side}_{tile}"
            subprocess.run(["rm", "-rf", str(pred)], check=True)
            extra = ["--precision", "auto", "--tile", str(tile)]
            r = in_wrapper(ck, folder, pred, extra, threads=0)
            out[f"{side}_tile{tile}"] = {"side": side, "tile": tile, **r}
            print(
                f"{side} px, tile {tile or 'whole'}: peak RSS {r['peak_rss_mib']:.0f} MiB, "
                f"{r['seconds']:.1f} s",
                flush=True,
            )
    return out


def drive_runs(run: Path, root: Path) -> dict[str, Any]:
    """The run's best.pt on DRIVE's test images whole and in windows: FOV scores, s per image."""
    from biounet.data.folder import read_splits
    from biounet.data.io import read_mask

    stems = read_splits(root)["test"]
    truths = [read_mask(root / "masks" / "vessel" / f"{s}.png") > 0 for s in stems]
    fovs = [read_mask(root / "masks" / "fov" / f"{s}.png") > 0 for s in stems]
    out: dict[str, Any] = {"run": str(run), "n_images": len(stems)}
    whole = None
    for tile in DRIVE_TILES:
        probs, s_per_image = predict_test(run / "best.pt", root, stems, False, tile)
        if whole is None:
            whole = probs
        diff = max(float(np.abs(p - w).max()) for p, w in zip(probs, whole, strict=True))
        scores = fov_scores(probs, truths, fovs)
        out[f"tile{tile}"] = {
            "tile": tile,
            "f1": scores["f1"],
            "auc": scores["auc"],
            "s_per_image": s_per_image,
            "max_abs_prob_diff_vs_whole": diff,
        }
        print(f"DRIVE tile {tile or 'whole'}: F1 {scores['f1']:.4f}, AUC {scores['auc']:.4f}")
    return out


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# biounet predict: large images in windows (--tile)",
        "",
        f"Commit `{data['commit']}`; {data['machine']}. Command: "
        "`python benchmarks/predict_tiles.py`.",
        "",
    ]
    mem = data.get("memory") or {}
    if mem:
        lines += [
            "One S x S image, an untrained `small` U-Net (1.94M parameters) prepared at S px, bf16 "
            "where the CPU has it; each run a fresh `biounet predict` process (wall time includes "
            "start-up).",
            "",
            "| side | whole: peak RSS MiB | whole: s | 512 px windows: peak RSS MiB | windows: s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for side in sorted({v["side"] for v in mem.values()}):
            w, t = mem[f"{side}_tile0"], mem[f"{side}_tile{WINDOW}"]
            lines.append(
                f"| {side} | {w['peak_rss_mib']:.0f} | {w['seconds']:.1f} | "
                f"{t['peak_rss_mib']:.0f} | {t['seconds']:.1f} |"
            )
        lines += [
            "",
            f"`--tile auto` (the default) runs images above 1024 px in {WINDOW} px windows.",
            "",
        ]
    drive = data.get("drive")
    if drive:
        lines += [
            f"DRIVE test ({drive['n_images']} images, 576 px, `{drive['run']}`), inside the field "
            "of view, pooled, threshold 0.5, no TTA; windows overlap by 25 %, Gaussian-blended, "
            "normalised with the whole image's statistics:",
            "",
            "| windows | F1 | AUC | s per image | max abs prob. diff. vs whole |",
            "|---|---:|---:|---:|---:|",
        ]
        for k in (f"tile{t}" for t in DRIVE_TILES):
            r = drive[k]
            lines.append(
                f"| {r['tile'] or 'whole'} | {r['f1']:.4f} | {r['auc']:.4f} | "
                f"{r['s_per_image']:.3f} | {r['max_abs_prob_diff_vs_whole']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--drive-run", type=Path, help="a drive_vessels.py run folder (best.pt)")
    ap.add_argument("--drive-data", type=Path, default=SHARED_DATA / "drive")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/biounet_predict_tiles"))
    a = ap.parse_args()
    data: dict[str, Any] = {}
    if a.sides:
        data = update_results(NAME, "memory", memory_runs(a.sides, a.scratch))
    if a.drive_run:
        if not (a.drive_data.is_dir() and (a.drive_run / "best.pt").is_file()):
            raise SystemExit(f"{a.drive_data} or {a.drive_run}/best.pt not found: no DRIVE part")
        data = update_results(NAME, "drive", drive_runs(a.drive_run, a.drive_data))
    if not data:
        raise SystemExit("nothing to run: give --sides or --drive-run")
    data.setdefault("machine", machine())
    (RESULTS / f"{NAME}.md").write_text(markdown(data))
    print((RESULTS / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
