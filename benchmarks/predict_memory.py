"""Peak memory of ``biounet predict`` as the number of images grows: it streams, so peak RSS should
stay flat from 200 to 2,000 images.

    python benchmarks/predict_memory.py [--counts 200 2000] [--scratch /tmp/biounet_predict_memory]

Generates synthetic fundus photographs (128 x 128 PNG, distinct per image), saves an untrained
``small`` disc + cup model at 64 x 64 as a checkpoint (what predict does with memory does not depend
on the weights), then for each count runs ``biounet predict`` in a fresh wrapper process whose only
child is the predict process, so ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that child's peak RSS.
One intra-op thread. Also times a second run over the largest folder, where every image is skipped
because its outputs exist. Writes benchmarks/results/predict_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, update_results  # noqa: E402

NAME = "predict_memory"
SIDE, NET_SIZE = 128, 64


def write_images(folder: Path, n: int) -> Path:
    """``n`` synthetic fundus PNGs (image i from seed i, so every count shares its first images)."""
    from biounet.data.synthetic import synthetic_fundus

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"img_{i:05d}.png"
        if not path.is_file():
            img, _, _ = synthetic_fundus(np.random.default_rng(i), SIDE, SIDE)
            Image.fromarray(img).save(path)
    return folder


def write_checkpoint(path: Path, net_size: int = NET_SIZE) -> Path:
    """An untrained ``small`` disc + cup U-Net whose images are prepared at ``net_size``."""
    import torch

    from biounet.checkpoint import save_checkpoint
    from biounet.infer import preprocess_spec
    from biounet.models import build_model, preset

    cfg = preset("small", in_channels=3, out_channels=2)
    torch.manual_seed(0)
    save_checkpoint(path, build_model(cfg), cfg, ("disc", "cup"), preprocess_spec(net_size, 3))
    return path


def measure(
    checkpoint: Path, images: Path, out: Path, extra: list[str] | None = None, threads: int = 1
) -> dict[str, float]:
    """Run in a fresh wrapper process: predict as its only child; the child's peak RSS and wall
    time. ``extra``: more predict flags (after ``--precision fp32``, so they may replace it);
    ``threads``: intra-op threads (0: torch's default)."""
    cmd = [sys.executable, "-m", "biounet", "-q", "predict", "--checkpoint", str(checkpoint)]
    cmd += ["--out", str(out), "--precision", "fp32", *(extra or []), str(images)]
    env = dict(os.environ)
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {"peak_rss_mib": kib / 1024, "seconds": seconds}


def in_wrapper(
    checkpoint: Path, images: Path, out: Path, extra: list[str] | None = None, threads: int = 1
) -> dict[str, float]:
    """``measure`` in a new process, so no earlier child's peak counts."""
    cmd = [sys.executable, __file__, "--measure", str(checkpoint), str(images), str(out)]
    cmd += ["--extra", json.dumps(extra or []), "--threads", str(threads)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_count(checkpoint: Path, scratch: Path, n: int, source: Path) -> dict[str, float]:
    """Predict ``n`` images into a fresh folder (hard links to the first ``n`` generated images)."""
    images = scratch / f"images_{n}"
    images.mkdir(exist_ok=True)
    for i in range(n):
        link = images / f"img_{i:05d}.png"
        if not link.exists():
            os.link(source / link.name, link)
    out = scratch / f"pred_{n}"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    r = in_wrapper(checkpoint, images, out)
    written = len(list(out.glob("*_overlay.png")))
    if written != n:
        raise SystemExit(f"predict wrote {written} overlays for {n} images")
    r = {"images": n, **r, "images_per_s": n / r["seconds"]}
    print(
        f"N={n}: peak RSS {r['peak_rss_mib']:.0f} MiB, {r['seconds']:.1f} s, "
        f"{r['images_per_s']:.1f} images/s",
        flush=True,
    )
    return r


def write_markdown(data: dict) -> None:
    runs = sorted(
        (v for k, v in data.items() if k.startswith("n") and k[1:].isdigit()),
        key=lambda r: r["images"],
    )
    lines = [
        "# biounet predict: peak memory vs number of images",
        "",
        f"Commit {data['commit']}; {data['machine']}.",
        f"{data['settings']}",
        "",
        "Wall time is process start to exit, start-up included (imports, checkpoint: about the",
        "all-skipped rerun's time); other jobs shared the machine.",
        "",
        "| images | peak RSS (MiB) | wall time (s) | images/s |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['images']} | {r['peak_rss_mib']:.0f} | {r['seconds']:.1f} | "
        f"{r['images_per_s']:.1f} |"
        for r in runs
    ]
    if "rerun_all_skipped" in data:
        s = data["rerun_all_skipped"]
        lines += [
            "",
            f"Second run over the {s['images']} images (every output exists, all skipped): "
            f"{s['seconds']:.1f} s, peak RSS {s['peak_rss_mib']:.0f} MiB.",
        ]
    (RESULTS / f"{NAME}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/biounet_predict_memory"))
    ap.add_argument("--measure", nargs=3, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:  # the wrapper process
        print(json.dumps(measure(*a.measure, json.loads(a.extra), a.threads)))
        return
    a.scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source = write_images(a.scratch / "generated", max(a.counts))
    print(f"{max(a.counts)} images ready in {time.perf_counter() - t0:.1f} s", flush=True)
    ck = write_checkpoint(a.scratch / "small_untrained.pt")
    update_results(
        NAME,
        "settings",
        f"Inputs {SIDE}x{SIDE} RGB PNG (synthetic fundus); preset small "
        f"(untrained), network input {NET_SIZE}x{NET_SIZE}, fp32, CPU, 1 thread; each run "
        "in a fresh process, peak RSS = getrusage(RUSAGE_CHILDREN).ru_maxrss.",
    )
    for n in a.counts:
        data = update_results(NAME, f"n{n}", run_count(ck, a.scratch, n, source))
    n = max(a.counts)
    again = in_wrapper(ck, a.scratch / f"images_{n}", a.scratch / f"pred_{n}")
    data = update_results(NAME, "rerun_all_skipped", {"images": n, **again})
    print(f"rerun over {n} (all skipped): {again['seconds']:.1f} s")
    write_markdown(data)


if __name__ == "__main__":
    main()
