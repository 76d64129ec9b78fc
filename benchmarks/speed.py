"""Training and inference speed of biounet's U-Net against MONAI's BasicUNet (same widths) and a plain
eager fp32 PyTorch U-Net of the same shape, measured in one run on this machine.

    python benchmarks/speed.py                 # CPU, the full tables (about 20 minutes on 2 cores)
    python benchmarks/speed.py --device cuda   # the same on a GPU (a "cuda" section beside "cpu")
    python benchmarks/speed.py --quick         # tiny sizes, one repetition: checks that it runs

Each configuration (implementation x widths x input size x batch x train/infer) runs in its own
subprocess (speed_worker.py), so its peak RSS is its own. biounet runs with its own settings
(channels-last, bf16 autocast where the hardware has it, batch norm folded for inference); the peers
run as their users run them (eager, fp32). Model FLOP utilisation (MFU) = conv FLOPs per second
(x3 for a training step) / the bf16 or fp32 matmul peak measured in the same run. Writes
<results-dir>/speed.json and speed.md (default benchmarks/results; --quick: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, git_commit, machine, write_json_md  # noqa: E402

WORKER = Path(__file__).resolve().parent / "speed_worker.py"
FUNDUS_VARIANTS = ("fast", "eager", "ort", "monai_swi")


def settings(a: argparse.Namespace) -> dict[str, Any]:
    if a.quick:
        return {
            "widths": {"classic": 8, "small": 4},
            "sizes": [64],
            "batches": [1, 2],
            "reps": 1,
            "warmup": 1,
            "cap_s": 10.0,
            "peak": {"seconds": 0.2, "sizes": [256]},
        }
    cuda = a.device == "cuda"
    widths = {"classic": 64, "small": 16}
    return {
        "widths": {k: v for k, v in widths.items() if not a.widths or k in a.widths},
        "sizes": a.sizes or [256, 512],
        "batches": a.batches or [1, 4],
        "reps": a.reps or (10 if cuda else 5),
        "warmup": 3 if cuda else 1,
        "cap_s": 60.0,
        "peak": {"seconds": 2.0, "sizes": [4096, 8192] if cuda else [2048, 4096]},
    }


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The worker's RESULT dict, or {"error": ...} (a failed peer must not stop the run).
    ``spec["in_process"]``: run it in this process (no per-configuration RSS; on CUDA the peak GPU
    memory is still per configuration), saving a process start per configuration (~16 s on the
    GPU machine)."""
    if spec.pop("in_process", False):
        return run_in_process(spec)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        p = subprocess.run(
            [sys.executable, str(WORKER), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {p.returncode}: {tail}"}


def run_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    import speed_worker

    try:
        out = speed_worker.main(spec)
    except Exception as e:  # a failed peer must not stop the run
        return {"error": f"{type(e).__name__}: {e}"}
    return out | {"rss_mb": None, "in_process": True}


def has_module(name: str) -> bool:
    p = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
    return p.returncode == 0


def model_spec(a: argparse.Namespace, s: dict[str, Any], **kw: Any) -> dict[str, Any]:
    common = {"device": a.device, "reps": s["reps"], "warmup": s["warmup"], "cap_s": s["cap_s"]}
    common["in_process"] = a.in_process
    return {**common, **kw}


def log_result(a: argparse.Namespace, label: str, r: dict[str, Any]) -> None:
    """Print one configuration's result and append it to --log (JSON lines), so that a run cut
    short still leaves every measurement it made."""
    print(f"{label}: {brief(r)}", flush=True)
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps({"label": label, **r}) + "\n")


def model_rows(a: argparse.Namespace, s: dict[str, Any], impls: list[str]) -> list[dict]:
    rows = []
    for wname, base in s["widths"].items():
        for size in s["sizes"]:
            for batch in s["batches"]:
                for task in ("train", "infer"):
                    row: dict[str, Any] = {"widths": wname, "size": size, "batch": batch}
                    row["task"] = task
                    for impl in impls:
                        spec = model_spec(
                            a, s, task=task, impl=impl, base=base, size=size, batch=batch
                        )
                        row[impl] = r = run_worker(spec, a.timeout)
                        log_result(a, f"{wname} {size} b{batch} {task} {impl}", r)
                    rows.append(row)
    return rows


def compile_rows(a: argparse.Namespace, s: dict[str, Any]) -> list[dict[str, Any]]:
    """biounet's training step with ``torch.compile`` at the largest size and batch, each width
    (compilation takes minutes per configuration on a CPU, hence not every row)."""
    size, batch = max(s["sizes"]), max(s["batches"])
    rows = []
    for wname, base in s["widths"].items():
        kw = {"task": "train", "impl": "biounet", "base": base, "size": size, "batch": batch}
        r = run_worker({**model_spec(a, s, **kw), "compile": True}, a.timeout)
        log_result(a, f"{wname} {size} b{batch} train biounet+compile", r)
        rows.append({"widths": wname, "size": size, "batch": batch, "task": "train", "biounet": r})
    return rows


MEASURED_CKPT_SCOPES = ("all", "top")


def checkpointing_row(a: argparse.Namespace, s: dict[str, Any], scope: str) -> dict[str, Any]:
    """biounet's classic widths, largest size and batch, training with activation checkpointing of
    ``scope`` ("all": every block; "top": the three finest levels but the last block)."""
    size, batch = max(s["sizes"]), max(s["batches"])
    row = {"widths": "classic", "size": size, "batch": batch, "task": "train", "scope": scope}
    if "classic" not in s["widths"]:
        return {**row, "biounet": {"error": "not run: the classic widths were not selected"}}
    base = s["widths"]["classic"]
    spec = model_spec(a, s, task="train", impl="biounet", base=base, size=size, batch=batch)
    r = run_worker({**spec, "checkpointing": scope}, a.timeout)
    log_result(a, ckpt_label(size, batch, scope), r)
    return {**row, "biounet": r}


def ckpt_label(size: int, batch: int, scope: str) -> str:
    """The --log label of a checkpointing row (speed_merge.py reads it back)."""
    suffix = "" if scope == "all" else f"-{scope}"
    return f"classic {size} b{batch} train biounet+checkpointing{suffix}"


def fundus_timings(a: argparse.Namespace, s: dict[str, Any], impls: list[str]) -> dict[str, dict]:
    """One 1024x900 image to masks: biounet's pipeline fast, eager, with ONNX Runtime; MONAI's
    sliding window."""
    variants = [v for v in FUNDUS_VARIANTS if "monai" in impls or v != "monai_swi"]
    if a.device == "cuda" or not has_module("onnxruntime"):
        variants.remove("ort")  # it runs on the CPU: no comparison on a GPU
    out = {}
    for v in variants:
        spec = {"task": "fundus", "variant": v, "device": a.device, "reps": max(s["reps"], 3)}
        out[v] = run_worker(spec, a.timeout)
        log_result(a, f"fundus 1024x900 {v}", out[v])
    return out


def brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    rss = "in process" if r.get("rss_mb") is None else f"peak RSS {r['rss_mb']:.0f} MB"
    if "img_s" in r:
        return f"{r['img_s']:.2f} img/s, {rss}"
    return f"{r['seconds']:.3f} s, {rss}"


def add_derived(rows: list[dict], peak: dict[str, float], impls: list[str]) -> None:
    """MFU of every measurement and the biounet/peer throughput ratios of every row."""
    for row in rows:
        for impl in impls:
            r = row.get(impl, {})
            if "img_s" in r:
                flops = r["flops_fwd_per_img"] * (3 if row["task"] == "train" else 1) * r["img_s"]
                r["mfu"] = flops / peak[f"{r['precision']}_flops"]
                r["mfu_vs_bf16_peak"] = flops / peak["bf16_flops"]
        for peer in impls[1:]:
            b, p = row["biounet"], row.get(peer, {})
            if "img_s" in b and "img_s" in p:
                row[f"ratio_vs_{peer}"] = b["img_s"] / p["img_s"]


def summarise(
    rows: list[dict], ckpts: list[dict], fundus: dict[str, dict], s: dict
) -> dict[str, Any]:
    def ratios(task: str, peer: str) -> list[float]:
        return [
            r[f"ratio_vs_{peer}"] for r in rows if r["task"] == task and f"ratio_vs_{peer}" in r
        ]

    size, batch = max(s["sizes"]), max(s["batches"])
    big = next(
        (
            r
            for r in rows
            if (r["widths"], r["size"], r["batch"], r["task"]) == ("classic", size, batch, "train")
        ),
        {},
    )
    out: dict[str, Any] = {}
    for task in ("train", "infer"):
        for peer in ("monai", "plain"):
            v = ratios(task, peer)
            out[f"{task}_speedup_vs_{peer}"] = min(v) if v else None  # the smallest over configs
    out["mfu_train"] = big.get("biounet", {}).get("mfu")
    out[f"peak_rss_mb_train_classic_{size}_b{batch}"] = big.get("biounet", {}).get("rss_mb")
    unchecked = big.get("biounet", {})  # the same training without checkpointing
    for ck in ckpts:
        suffix = "" if ck.get("scope", "all") == "all" else f"_{ck['scope']}"
        r = ck["biounet"]
        out[f"peak_rss_mb_train_classic_{size}_b{batch}_checkpointed{suffix}"] = r.get("rss_mb")
        if "img_s" in r and "img_s" in unchecked:  # the time it costs: < 1 is slower
            out[f"train_speed_checkpointed{suffix}_vs_not"] = r["img_s"] / unchecked["img_s"]
    for v, r in fundus.items():
        key = "predict_fundus_s" if v == "fast" else f"predict_fundus_{v}_s"
        out[key] = r.get("seconds")
    return out


def make_section(
    rows: list[dict],
    ckpts: list[dict],
    compiled: list[dict],
    fundus: dict[str, dict],
    peak: dict[str, float],
    impls: list[str],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """One device's results: MFU and ratios added to the rows, the summary, the run's commit."""
    add_derived([*rows, *ckpts, *compiled], peak, impls)
    return {
        "summary": summarise(rows, ckpts, fundus, settings),
        "peak": peak,
        "rows": rows,
        "checkpointing": ckpts,
        "compiled": compiled,
        "fundus": fundus,
        "settings": settings,
        "commit": git_commit(),
    }


def write(results_dir: Path, device: str, section: dict[str, Any]) -> Path:
    """<results_dir>/speed.json keeps other devices' sections; the CPU summary is also top-level."""
    path = results_dir / "speed.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[device] = section
    if device == "cpu":
        data.update(section["summary"], commit=section["commit"], machine=section["machine"])
    from speed_report import markdown

    write_json_md(path, data, markdown(data))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (smoke test)")
    ap.add_argument(
        "--reps", type=int, help="timed repetitions per configuration (default 5; cuda 10)"
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also rows of biounet under torch.compile (largest size and batch)",
    )
    ap.add_argument("--log", type=Path, help="append each result to this JSON-lines file")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="model rows in this process: no per-configuration RSS, no process start each "
        "(for a GPU run on a time budget)",
    )
    ap.add_argument(
        "--without-monai",
        action="store_true",
        help="run without the MONAI peer when it is not installed (its ratios are then missing)",
    )
    ap.add_argument("--widths", nargs="+", choices=["classic", "small"], help="default: both")
    ap.add_argument("--sizes", nargs="+", type=int, help="default: 256 512")
    ap.add_argument("--batches", nargs="+", type=int, help="default: 1 4")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration")
    ap.add_argument(
        "--results-dir", type=Path, help="default benchmarks/results (--quick: a temp dir)"
    )
    a = ap.parse_args(argv)
    s = settings(a)
    impls = ["biounet", "monai", "plain"]
    if not has_module("monai"):
        if not (a.quick or a.results_dir or a.without_monai):
            # the committed results compare against MONAI: do not overwrite them without it
            raise SystemExit(
                "speed.py: monai is not installed (pip install -e '.[bench]'); MONAI is the peer "
                "the summary compares with. Install it, or pass --without-monai (with "
                "--results-dir to keep benchmarks/results as they are)"
            )
        print("monai is not installed (pip install 'biounet[bench]'): MONAI peer skipped")
        impls.remove("monai")
    peak = run_worker({"task": "peak", "device": a.device, **s["peak"]}, a.timeout)
    print(f"matmul peak: {peak}", flush=True)
    rows = model_rows(a, s, impls)
    ckpts = [checkpointing_row(a, s, scope) for scope in MEASURED_CKPT_SCOPES]
    fundus = fundus_timings(a, s, impls)
    compiled = compile_rows(a, s) if a.compile else []
    section = make_section(
        rows,
        ckpts,
        compiled,
        fundus,
        peak,
        impls,
        {**s, "compile": a.compile, "quick": a.quick, "in_process": a.in_process},
    )
    section |= {"machine": machine(), "device": device_name(a.device)}
    results_dir = a.results_dir or (
        Path(tempfile.mkdtemp(prefix="speed_quick_")) if a.quick else RESULTS
    )
    path = write(results_dir, a.device, section)
    print(json.dumps(section["summary"], indent=1))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def device_name(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    sys.exit(main())
