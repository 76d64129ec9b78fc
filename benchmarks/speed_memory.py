"""What keeping freed memory (``biounet.memory``, ``--reuse-memory``) does to speed and peak RSS,
for biounet and for MONAI's BasicUNet given the same malloc setting.

    python benchmarks/speed_memory.py            # about 10 minutes on the 2-core CPU

Each configuration runs in its own process (speed.py's worker), the arms in turn within one run:
biounet as it trains and predicts by default ("on"), biounet with malloc left alone ("off"), MONAI
as its users run it ("off") and MONAI with the same setting ("on": what the allocator alone gives
a peer). Writes ``benchmarks/results/speed_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, git_commit, machine, md_header, write_json_md  # noqa: E402
from speed import run_worker  # noqa: E402

# (widths, base width, size, batch, task, timed repetitions)
CONFIGS = [
    ("classic", 64, 512, 4, "train", 3),
    ("classic", 64, 512, 4, "infer", 5),
    ("small", 16, 256, 1, "train", 30),
    ("small", 16, 256, 1, "infer", 50),
]
ARMS = [("biounet", "on"), ("biounet", "off"), ("monai", "off"), ("monai", "on")]


def measure(configs: list[tuple], timeout: float) -> list[dict[str, Any]]:
    rows = []
    for widths, base, size, batch, task, reps in configs:
        for impl, setting in ARMS:
            spec = {"task": task, "impl": impl, "base": base, "size": size, "batch": batch}
            spec |= {"reps": reps, "warmup": 2, "cap_s": 600.0, "reuse_memory": setting}
            r = run_worker(spec, timeout)
            row = {"widths": widths, "size": size, "batch": batch, "task": task, "impl": impl}
            row |= {"reuse_memory": setting, "in_effect": r.get("reuse_memory")}
            row |= {k: r.get(k) for k in ("img_s", "rss_mb", "times_s", "error")}
            rows.append(row)
            print(f"{widths} {size} b{batch} {task} {impl} reuse {setting}: "
                  f"{r.get('img_s')} img/s, {r.get('rss_mb')} MB", flush=True)  # fmt: skip
    return rows


def ratio(rows: list[dict], row: dict, impl: str, setting: str) -> float | None:
    """row's img/s over that of the same configuration's (impl, setting) arm."""
    same = ("widths", "size", "batch", "task")
    for o in rows:
        if all(o[k] == row[k] for k in same) and (o["impl"], o["reuse_memory"]) == (impl, setting):
            return row["img_s"] / o["img_s"] if row["img_s"] and o["img_s"] else None
    return None


def markdown(data: dict[str, Any]) -> str:
    title = "Keeping freed memory (`--reuse-memory`): speed and peak RSS"
    out = [
        *md_header(title, data, "speed_memory.py"),
        "",
        "Each row in its own process, in turn within one run. 'on': glibc serves every block from "
        "its heap and keeps freed memory (`biounet.memory`; biounet's default for CPU work "
        "without activation checkpointing); 'off': malloc as it comes (MONAI's users' default). "
        "'vs MONAI off': img/s over MONAI's as its users run it.",
        "",
        "| widths | size | batch | task | model | reuse | img/s | x own 'off' | vs MONAI off "
        "| peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in data["rows"]:
        img = "error: " + str(r["error"]) if r["img_s"] is None else f"{r['img_s']:.2f}"
        rss = "-" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"
        out.append(
            f"| {r['widths']} | {r['size']} | {r['batch']} | {r['task']} | {r['impl']} | "
            f"{r['reuse_memory']} | {img} | {fmt(ratio(data['rows'], r, r['impl'], 'off'))} | "
            f"{fmt(ratio(data['rows'], r, 'monai', 'off'))} | {rss} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one tiny configuration (smoke test)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    configs = [("small", 8, 64, 1, "train", 2)] if a.quick else CONFIGS
    data = {"commit": git_commit(), "machine": machine(), "rows": measure(configs, a.timeout)}
    path = a.results_dir / "speed_memory.json"
    print(f"wrote {path} and {write_json_md(path, data, markdown(data))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
