"""Merge the device sections of another run's speed.json (say, a GPU run made elsewhere by
gpu_checks.sh) into benchmarks/results/speed.json, and rewrite speed.md.

    python benchmarks/speed_merge.py /tmp/biounet_gpu/speed.json [--device cuda]

A run cut short (a device lease running out) leaves no speed.json, only the JSON-lines log of
speed.py --log: ``--from-log LOG... --peak PEAK_JSON --device-name NAME`` builds the section from
the measurements it holds, marked partial, with the configurations it lacks listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_json_md  # noqa: E402
from speed import MEASURED_CKPT_SCOPES, ckpt_label, make_section  # noqa: E402
from speed_report import markdown  # noqa: E402

IMPLS = ["biounet", "monai", "plain"]


def merge(src: Path, dst: Path, devices: list[str]) -> dict:
    """dst's JSON with ``devices``' sections replaced by src's; other keys of dst kept."""
    other = json.loads(src.read_text())
    data = json.loads(dst.read_text()) if dst.is_file() else {}
    missing = [d for d in devices if d not in other]
    if missing:
        raise SystemExit(f"{src}: no {', '.join(missing)} section (it has {sorted(other)})")
    for d in devices:
        data[d] = other[d]
    return data


def section_from_log(
    lines: list[dict], peak: dict[str, float], settings: dict, device: str, machine: str
) -> dict:
    """A speed.py section from its --log lines ({"label": "classic 512 b4 train biounet", ...}):
    the full grid of ``settings``, each configuration filled where the log has it."""
    found = {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in lines}
    rows, missing = [], []
    for wname in settings["widths"]:
        for size in settings["sizes"]:
            for batch in settings["batches"]:
                for task in ("train", "infer"):
                    row = {"widths": wname, "size": size, "batch": batch, "task": task}
                    for impl in IMPLS:
                        label = f"{wname} {size} b{batch} {task} {impl}"
                        row[impl] = found.get(label) or {"error": "not measured (run cut short)"}
                        if label not in found:
                            missing.append(label)
                    rows.append(row)
    size, batch = max(settings["sizes"]), max(settings["batches"])
    ckpts = [
        {
            "widths": "classic",
            "size": size,
            "batch": batch,
            "task": "train",
            "scope": scope,
            "biounet": found.get(
                ckpt_label(size, batch, scope), {"error": "not measured (run cut short)"}
            ),
        }
        for scope in MEASURED_CKPT_SCOPES
    ]
    fundus = {
        label.split()[-1]: r for label, r in found.items() if label.startswith("fundus 1024x900")
    }
    compiled = [
        {"widths": label.split()[0], "size": size, "batch": batch, "task": "train", "biounet": r}
        for label, r in found.items()
        if label.endswith("biounet+compile")
    ]
    settings = {**settings, "quick": False, "partial": True, "missing": missing}
    section = make_section(rows, ckpts, compiled, fundus, peak, IMPLS, settings)
    return section | {"machine": machine, "device": device}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, nargs="?", help="another run's speed.json")
    ap.add_argument("--device", action="append", help="section(s) to take (default cuda)")
    ap.add_argument("--into", type=Path, default=RESULTS / "speed.json")
    ap.add_argument("--from-log", type=Path, nargs="+", help="speed.py --log files of a cut run")
    ap.add_argument("--peak", help="the run's matmul peak, as JSON")
    ap.add_argument("--settings", help="the run's settings, as JSON (widths, sizes, batches, reps)")
    ap.add_argument("--device-name", default="", help="e.g. 'NVIDIA H200, torch 2.11.0+cu130'")
    ap.add_argument("--machine", default="", help="the machine the log was measured on")
    ap.add_argument("--note", action="append", default=[], help="a line for the section's notes")
    a = ap.parse_args(argv)
    if a.from_log:
        lines = [json.loads(x) for f in a.from_log for x in f.read_text().splitlines() if x]
        section = section_from_log(
            lines, json.loads(a.peak), json.loads(a.settings), a.device_name, a.machine
        )
        data = json.loads(a.into.read_text()) if a.into.is_file() else {}
        data[(a.device or ["cuda"])[0]] = {**section, "notes": a.note}
    else:
        data = merge(a.src, a.into, a.device or ["cuda"])
    print(f"wrote {a.into} and {write_json_md(a.into, data, markdown(data))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
