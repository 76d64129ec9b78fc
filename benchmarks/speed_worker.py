"""One configuration of benchmarks/speed.py, run in its own process so that its peak RSS is its own.

    python benchmarks/speed_worker.py '{"task": "train", "impl": "biounet", "base": 64, ...}'

Prints one line ``RESULT {json}``. Tasks: ``train`` / ``infer`` (one model, one input size and batch),
``peak`` (the matmul peak of this machine), ``fundus`` (one 1024x900 image to masks).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biounet.config import ModelConfig
from biounet.fast import apply_checkpointing, prepare_for_inference
from biounet.infer import autocast, resolve_precision
from biounet.losses import bce_dice_loss
from biounet.memory import reuse_memory
from biounet.models import build_model
from biounet.optim import backward_step, grad_scaler, make_adam


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class PlainUNet(nn.Module):
    """The U-Net as people write it in plain PyTorch: the same shape as biounet's (BN, 2x2 up-conv)."""

    def __init__(self, c_in: int, c_out: int, base: int, depth: int = 4) -> None:
        super().__init__()
        w = [base * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([double_conv(c_in, w[0])])
        self.enc.extend(double_conv(w[i], w[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(double_conv(2 * w[i], w[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(w[0], c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.enc[0](x)]
        for enc in self.enc[1:]:
            skips.append(enc(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)


def build(impl: str, base: int) -> nn.Module:
    """3 in, 2 out, depth 4, widths base..16 base."""
    if impl == "biounet":
        return build_model(ModelConfig(in_channels=3, out_channels=2, base_width=base, depth=4))
    if impl == "monai":
        from monai.networks.nets import BasicUNet

        f = (base, 2 * base, 4 * base, 8 * base, 16 * base, base)
        return BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=f)
    if impl == "plain":
        return PlainUNet(3, 2, base)
    raise ValueError(f"impl must be biounet, monai or plain, got {impl!r}")


def forward_flops(impl: str, base: int, size: int) -> float:
    """FLOPs of one (1, 3, size, size) forward pass: 2 x the MACs of every conv and transposed
    conv, counted with hooks on a model on the meta device (no compute)."""
    macs = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.ConvTranspose2d):
            macs += inp[0].numel() * (m.out_channels // m.groups) * k
        else:
            macs += out.numel() * (m.in_channels // m.groups) * k

    with torch.device("meta"):
        model = build(impl, base)
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                m.register_forward_hook(hook)
        model(torch.empty(1, 3, size, size))
    return 2.0 * macs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int, cap_s: float):
    """Seconds of each of ``reps`` calls after ``warmup`` calls (fewer, but at least 2, past cap_s)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (len(times) < 2 or time.perf_counter() - start < cap_s):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def run_model(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    impl, base, size, batch = spec["impl"], spec["base"], spec["size"], spec["batch"]
    fast = impl == "biounet"
    precision = resolve_precision("auto", device) if fast else peer_precision(device)
    torch.manual_seed(0)
    model = build(impl, base).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = (torch.rand(batch, 2, size, size, device=device) > 0.5).float()
    # biounet keeps freed memory for the next step as its train_loop and predictor do; the peers
    # run with malloc as their users have it unless the spec says otherwise
    ckpt = spec.get("checkpointing", "off") if spec["task"] == "train" else "off"
    reused = reuse_memory(spec.get("reuse_memory", "auto" if fast else "off"), device.type, ckpt)
    if fast:  # what biounet's train_loop and predictor do
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if spec["task"] == "train":
        apply_checkpointing(model, spec.get("checkpointing", "off"), x[:1])
        if spec.get("compile"):
            model.compile()
        model.train()
        # biounet's trainer: fused Adam (biounet.optim); the peers: PyTorch's default Adam
        opt = (
            make_adam(model.parameters(), 1e-4)
            if fast
            else torch.optim.Adam(model.parameters(), lr=1e-4)
        )
        scaler = grad_scaler(precision, device)

        def step() -> None:
            with autocast(device, precision):
                logits = model(x)
            backward_step(bce_dice_loss(logits, y), opt, scaler)
    else:
        compile_ = spec.get("compile", False)
        net = prepare_for_inference(model, precision, compile=compile_) if fast else model.eval()

        @torch.inference_mode()
        def step() -> None:
            with autocast(device, precision):
                net(x)

    times = timed(step, device, spec["reps"], spec["warmup"], spec.get("cap_s", 120.0))
    med = statistics.median(times)
    return {
        "img_s": batch / med,
        "median_s": med,
        "times_s": times,
        "precision": precision,
        "params": sum(p.numel() for p in model.parameters()),
        "flops_fwd_per_img": forward_flops(impl, base, size),
        "reuse_memory": reused,
    }


def peer_precision(device: torch.device) -> str:
    """What an eager fp32 model really runs in: cuDNN does fp32 convolutions in TF32 by default."""
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def matmul_peak(device: torch.device, seconds: float, sizes: list[int]) -> dict[str, float]:
    """Per dtype, the larger of the FLOP/s of the best square torch.mm over ``sizes`` and of a
    large 3x3 convolution (256 -> 256 channels, 4 x 64 x 64, channels-last), each run for
    ``seconds`` (on CUDA also fp32 inputs with TF32 tensor cores, the peers' real peak there)."""
    out = {}
    dtypes = [("bf16", torch.bfloat16), ("fp32", torch.float32)]
    if device.type == "cuda":
        dtypes.append(("tf32", torch.float32))
    for name, dtype in dtypes:
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        best = 0.0
        for n in sizes:
            a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
            c = torch.mm(a, b)
            times = timed(lambda: torch.mm(a, b, out=c), device, 10**9, 2, seconds)  # noqa: B023
            best = max(best, 2.0 * n**3 / statistics.median(times))
        out[f"{name}_mm_flops"] = best
        # a large 3x3 convolution too: on some CPUs the BLAS matmul runs well below what oneDNN's
        # convolutions reach (here fp32 mm 216 GFLOP/s, fp32 conv 505), and a peak below what the
        # models achieve would overstate every MFU
        x = torch.randn(4, 256, 64, 64, device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype)
        w = w.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            times = timed(lambda: F.conv2d(x, w, padding=1), device, 10**9, 2, seconds)  # noqa: B023
        conv = 2.0 * 4 * 64 * 64 * 256 * 256 * 9 / statistics.median(times)
        out[f"{name}_conv_flops"] = conv
        out[f"{name}_flops"] = max(best, conv)
    return out


def run_fundus(spec: dict[str, Any]) -> dict[str, Any]:
    """One 1024x900 synthetic fundus photograph to masks with a two-stage pipeline of small-preset
    models (untrained: the timing does not depend on the weights)."""
    from biounet.checkpoint import save_checkpoint, save_pipeline
    from biounet.data.synthetic import synthetic_fundus
    from biounet.infer import preprocess_spec
    from biounet.models import preset
    from biounet.predictor import PredictOptions, make_predictor

    img = synthetic_fundus(np.random.default_rng(0), h=900, w=1024)[0]
    variant = spec["variant"]
    if variant == "monai_swi":
        return monai_sliding_window(img, spec)
    cfg = preset("small", in_channels=3, out_channels=2)
    with tempfile.TemporaryDirectory() as tmp:
        parts = {}
        for seed, name in enumerate(("locator", "roi")):
            torch.manual_seed(seed)
            parts[name] = Path(tmp) / f"{name}.pt"
            prep = {**preprocess_spec(256, 3), "roi_scale": 2.0}
            save_checkpoint(parts[name], build_model(cfg).eval(), cfg, ("disc", "cup"), prep)
        save_pipeline(Path(tmp) / "fundus.pt", parts, {})
        backend = "ort" if variant == "ort" else "torch"
        opts = PredictOptions(backend=backend, fast=variant != "eager")
        pred = make_predictor(Path(tmp) / "fundus.pt", opts)
    times = timed(lambda: pred.predict(img), torch.device("cpu"), spec["reps"], 1, 60.0)
    return {"seconds": statistics.median(times), "times_s": times}


def monai_sliding_window(img: np.ndarray, spec: dict[str, Any]) -> dict[str, Any]:
    """MONAI's way for a large image: a small-width BasicUNet slid over the full resolution."""
    from monai.inferers import sliding_window_inference

    device = torch.device(spec.get("device", "cpu"))
    model = build("monai", 16).to(device).eval()

    @torch.inference_mode()
    def run() -> np.ndarray:
        x = torch.from_numpy(img).to(device).permute(2, 0, 1)[None].float() / 255.0
        x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)
        logits = sliding_window_inference(x, (256, 256), 4, model, overlap=0.25)
        return (torch.sigmoid(logits) > 0.5).cpu().numpy()

    times = timed(run, device, spec["reps"], 1, 60.0)
    return {"seconds": statistics.median(times), "times_s": times}


def main(spec: dict[str, Any]) -> dict[str, Any]:
    device = torch.device(spec.get("device", "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # per configuration, also when run in one process
    if spec["task"] in ("train", "infer"):
        out = run_model(spec, device)
    elif spec["task"] == "peak":
        out = matmul_peak(device, spec["seconds"], spec["sizes"])
    elif spec["task"] == "fundus":
        out = run_fundus(spec)
    else:
        raise ValueError(f"unknown task {spec['task']!r}")
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    out["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
