"""Markdown of benchmarks/results/speed.json (written by speed.py; ``python speed_report.py`` redoes it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NOTES = """\
biounet: channels-last, bf16 autocast where the hardware has it, fused Adam, the 2x2 up-conv's
backward as matrix products on CPU, batch norm folded into the convs for inference, freed memory
kept for reuse on CPU (glibc malloc, `--reuse-memory`; not with checkpointing; its effect alone and
on MONAI: speed_memory.md); on CUDA also cuDNN autotuning. MONAI `BasicUNet` (its default instance norm and LeakyReLU) with the same widths, and a
plain PyTorch U-Net of biounet's shape (BN, 2x2 up-conv), both eager fp32 as their users run them.
3 in, 2 out, depth 4; classic widths 64..1024 (the paper's, with BN), small 16..256 (biounet's
default). Training step = forward + BCE+Dice loss + backward + Adam. img/s from the median step time;
peak RSS of the configuration's own process (it includes the ~0.3 GB of the Python + torch
runtime). MFU = conv/transposed-conv FLOPs (2 x MACs, x3 for a training step) per second / the
peak of the run's precision measured in the same run (biounet bf16 where supported, peers fp32):
the larger of a large square matmul's and a large 3x3 convolution's FLOP/s (runs before
speed_worker measured the convolution too took the matmul alone). Speed-ups in the summary are the smallest ratio over all configurations; `mfu_train` and the
peak RSS are for the classic widths at the largest size and batch. `predict_fundus_s`: one
1024x900 photograph to post-processed disc/cup masks through the two-stage pipeline (small-preset
models, untrained: the timing does not depend on the weights); `_eager_s` without the inference
speed-ups, `_ort_s` with ONNX Runtime, `_monai_swi_s` MONAI's `sliding_window_inference` of a
small-width BasicUNet over the full resolution (256 px windows, overlap 0.25) for comparison.
Rows "+ compile" (only in runs with `--compile`): biounet's model under `torch.compile`."""


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def section_md(name: str, sec: dict[str, Any]) -> list[str]:
    peak = sec["peak"]
    out = [
        f"## {name}: {sec['device']}",
        "",
        f"Machine: {sec['machine']}. Commit: `{sec['commit']}`."
        + (
            " **Quick smoke run: tiny sizes, not a measurement.**"
            if sec["settings"]["quick"]
            else ""
        ),
        f"Measured peak: bf16 {fmt(peak.get('bf16_flops', 0) / 1e9, '.0f')} GFLOP/s, "
        f"fp32 {fmt(peak.get('fp32_flops', 0) / 1e9, '.0f')} GFLOP/s"
        + (f", tf32 {peak['tf32_flops'] / 1e9:.0f} GFLOP/s" if "tf32_flops" in peak else "")
        + (
            f" (matmul / 3x3 convolution: bf16 {peak['bf16_mm_flops'] / 1e9:.0f} / "
            f"{peak['bf16_conv_flops'] / 1e9:.0f}, fp32 {peak['fp32_mm_flops'] / 1e9:.0f} / "
            f"{peak['fp32_conv_flops'] / 1e9:.0f})."
            if "bf16_conv_flops" in peak
            else "."
        ),
        *([""] + [f"- {n}" for n in sec["notes"]] if sec.get("notes") else []),
        "",
        "| summary | value |",
        "| --- | --- |",
    ]
    out += [f"| `{k}` | {fmt(v, '.3f')} |" for k, v in sec["summary"].items()]
    impls = [i for i in ("biounet", "monai", "plain") if any(i in r for r in sec["rows"])]
    head = ["widths", "size", "batch", "task"]
    head += [f"{i} img/s" for i in impls] + [f"biounet/{i}" for i in impls[1:]]
    head += [f"{i} RSS MB" for i in impls] + [f"{i} MFU" for i in impls]
    out += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    extra = [
        {**r, "widths": f"classic + checkpointing {r.get('scope', 'all')}"} for r in ckpt_rows(sec)
    ]
    extra += [{**r, "widths": f"{r['widths']} + compile"} for r in sec.get("compiled", [])]
    for r in [*sec["rows"], *extra]:
        cells = [r["widths"], str(r["size"]), str(r["batch"]), r["task"]]
        cells += [fmt(r.get(i, {}).get("img_s")) for i in impls]
        cells += [fmt(r.get(f"ratio_vs_{i}")) for i in impls[1:]]
        cells += [fmt(r.get(i, {}).get("rss_mb"), ".0f") for i in impls]
        cells += [fmt(r.get(i, {}).get("mfu"), ".1%") for i in impls]
        out.append("| " + " | ".join(cells) + " |")
    errors = [
        f"- {r['widths']} {r['size']} b{r['batch']} {r['task']} {i}: {r[i]['error']}"
        for r in [*sec["rows"], *ckpt_rows(sec), *sec.get("compiled", [])]
        for i in impls
        if "error" in r.get(i, {})
    ]
    errors += [f"- fundus {v}: {r['error']}" for v, r in sec["fundus"].items() if "error" in r]
    if errors:
        out += ["", "Failed configurations:", *errors]
    return out


def markdown(data: dict[str, Any]) -> str:
    out = ["# Speed: biounet vs MONAI BasicUNet vs plain PyTorch", "", NOTES, ""]
    for name in ("cpu", "cuda"):
        if name in data:
            out += section_md(name.upper(), data[name]) + [""]
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results/speed.json")
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))


def ckpt_rows(sec: dict) -> list[dict]:
    """The checkpointing rows: a list, or one dict in results written before the scopes."""
    ck = sec.get("checkpointing") or []
    return [ck] if isinstance(ck, dict) else ck
