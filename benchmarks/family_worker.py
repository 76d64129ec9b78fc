"""One speed/memory measure of benchmarks/family.py, in its own process so that its peak memory is
its own (``ru_maxrss`` of a child inherits the parent's peak on Linux; VmHWM of a fresh process
does not).

    python benchmarks/family_worker.py '{"task": "train", "preset": "small", "size": 256, "batch": 8}'

Tasks: ``train`` (Adam steps with the BCE + Dice loss under autocast, as ``biounet.train`` runs
them) and ``infer`` (the model prepared as the predictor runs it: BN folded, channels-last, bf16
weights where bf16 is used; ``inference_mode``). Synthetic 3-channel input, 2 labels. Prints one
line ``RESULT {json}``: img/s from the median step, VmHWM (peak) and the VmRSS before the model was
built (the Python + torch baseline), in MB.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biounet.fast import prepare_for_inference  # noqa: E402
from biounet.infer import autocast, resolve_precision  # noqa: E402
from biounet.losses import bce_dice_loss  # noqa: E402
from biounet.models import build_model, count_parameters, preset  # noqa: E402
from speed_worker import timed  # noqa: E402


def proc_status_mb(field: str) -> float:
    """A ``kB`` field of /proc/self/status (VmHWM, VmRSS) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    device = torch.device("cpu")
    precision = resolve_precision(spec.get("precision", "auto"), device)
    baseline = proc_status_mb("VmRSS")
    torch.manual_seed(0)
    model = build_model(preset(spec["preset"], in_channels=3, out_channels=2))
    model = model.to(memory_format=torch.channels_last)
    b, s = spec["batch"], spec["size"]
    x = torch.randn(b, 3, s, s).contiguous(memory_format=torch.channels_last)  # (B, 3, S, S)
    if spec["task"] == "train":
        y = (torch.rand(b, 2, s, s) > 0.5).float()  # (B, 2, S, S) {0, 1}
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()

        def step() -> None:
            with autocast(device, precision):
                logits = model(x)
            loss = bce_dice_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif spec["task"] == "infer":
        net = prepare_for_inference(model, precision, device=device)

        @torch.inference_mode()
        def step() -> None:
            with autocast(device, precision):
                net(x)
    else:
        raise ValueError(f"task must be train or infer, got {spec['task']!r}")
    times = timed(step, device, spec.get("reps", 5), spec.get("warmup", 1), spec.get("cap_s", 60))
    return {
        "img_s": b / statistics.median(times),
        "times_s": times,
        "peak_mb": proc_status_mb("VmHWM"),
        "baseline_rss_mb": baseline,
        "precision": precision,
        "parameters": count_parameters(model),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(measure(json.loads(sys.argv[1]))))
