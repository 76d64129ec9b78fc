"""ONNX export of checkpoints and an ONNX Runtime backend for prediction.

The exported graph takes (B, C, H, W) float32 images (normalised as the checkpoint's preprocessing
says) with dynamic B, H and W, and gives (B, L, H, W) float32 logits; batch norm is folded into the
convolutions. Each file's metadata holds the model config, labels and preprocessing (key
``biounet``, JSON), so it describes itself like a checkpoint does. ``onnx`` and ``onnxruntime`` are
optional (``pip install 'biounet[onnx]'``) and imported only inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet import __version__
from biounet.checkpoint import Checkpoint, EnsembleCheckpoint, PipelineCheckpoint, load_any
from biounet.errors import BiounetError
from biounet.fast import prepare_for_inference

log = logging.getLogger(__name__)

OPSET = 17
FORMATS = ("onnx",)
# Architectures that zero-pad any input to a multiple of 2**depth and crop the output back.
PADDED_ARCHS = ("unet", "attention_unet", "unet_plus_plus")


def onnx_bytes(ck: Checkpoint) -> bytes:
    """The checkpoint's model as a serialised ONNX graph (BN folded, fp32, dynamic B/H/W)."""
    model = prepare_for_inference(ck.build(), "fp32", channels_last=False)
    cfg = ck.model_config
    if cfg.arch in PADDED_ARCHS:
        # Trace at sides that are NOT multiples of 2**depth, so that the pad-to-a-multiple branch is
        # recorded (pad amounts computed from the input's shape) and the graph takes any H, W.
        h = w = 2**cfg.depth + 1
    else:  # e.g. unpadded convs: only some sizes are valid; the training size is one
        h = w = int(ck.preprocess["image_size"])
    x = torch.zeros(1, cfg.in_channels, h, w)
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns about that data-dependent branch and about the exporter's deprecation;
        # both are expected here (the torch.export-based exporter needs onnxscript besides).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=OPSET,
        )
    return buf.getvalue()


def describe(ck: Checkpoint) -> dict[str, Any]:
    """What an exported file records about its model (JSON-ready)."""
    return {
        "format": "biounet-onnx",
        "biounet_version": __version__,
        "model_config": dataclasses.asdict(ck.model_config),
        "labels": list(ck.labels),
        "preprocess": ck.preprocess,
        "input": "(B, in_channels, H, W) float32, normalised per preprocess['normalize']",
        "output": "(B, len(labels), H, W) float32 logits; sigmoid gives probabilities",
    }


def export_onnx(ck: Checkpoint, out: Path) -> Path:
    """Write ``ck``'s model to ``out`` as ONNX with its description in the metadata."""
    try:
        import onnx
    except ImportError as e:
        raise BiounetError(
            "ONNX export needs the 'onnx' package: pip install 'biounet[onnx]'"
        ) from e
    proto = onnx.load_from_string(onnx_bytes(ck))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "biounet", json.dumps(describe(ck))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, out)
    return out


def export_checkpoint(
    path: Path, out: Path, fmt: str = "onnx", overwrite: bool = True
) -> list[Path]:
    """Export a checkpoint file. A fundus pipeline file gives one file per model:
    ``<out stem>_locator.onnx`` and ``<out stem>_roi.onnx``. Returns the written paths.
    ``overwrite=False``: refuse (BiounetError, nothing written) where one of them exists."""
    if fmt not in FORMATS:
        raise BiounetError(f"--format {fmt!r} is not supported; valid: {', '.join(FORMATS)}")
    ck = load_any(path)
    targets = export_targets(ck, Path(out))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise BiounetError(f"{', '.join(existing)}: exists; export never overwrites a file")
    models = model_parts(ck)
    return [export_onnx(m, t) for m, t in zip(models.values(), targets, strict=True)]


def model_parts(ck: Checkpoint | PipelineCheckpoint | EnsembleCheckpoint) -> dict[str, Checkpoint]:
    """The single models in ``ck`` by name: a pipeline's parts, an ensemble's ``member<K>``,
    or ``ck`` itself (named "")."""
    if isinstance(ck, PipelineCheckpoint):
        return dict(ck.parts)
    if isinstance(ck, EnsembleCheckpoint):
        return {f"member{k}": m for k, m in enumerate(ck.members)}
    return {"": ck}


def export_targets(
    ck: Checkpoint | PipelineCheckpoint | EnsembleCheckpoint, out: Path
) -> list[Path]:
    """The files ``export_checkpoint`` writes for ``ck`` at ``out``: ``out`` itself, or one
    ``<out stem>_<part><suffix>`` per model of a pipeline or an ensemble."""
    names = list(model_parts(ck))
    if names == [""]:
        return [out]
    return [out.with_name(f"{out.stem}_{name}{out.suffix or '.onnx'}") for name in names]


class OrtModel:
    """An ONNX Runtime session called like the PyTorch model: (B, C, H, W) float tensor ->
    (B, L, H, W) float32 logits tensor on the CPU."""

    def __init__(self, model: bytes | Path, threads: int = 0) -> None:
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0: ONNX Runtime's choice (one per physical core)
        src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise BiounetError(
            "--backend ort needs the 'onnxruntime' package: pip install 'biounet[onnx]'"
        ) from e
    return onnxruntime


def ort_model(ck: Checkpoint) -> OrtModel:
    """``ck``'s model exported in memory and loaded into ONNX Runtime."""
    import_onnxruntime()  # fail before spending time on the export
    return OrtModel(onnx_bytes(ck))
