"""Self-describing checkpoints: weights + model config + labels + preprocessing + version.

Saved with ``torch.save`` of plain dicts, lists, numbers, strings and tensors only, and loaded with
``torch.load(weights_only=True)``, which refuses to unpickle anything else (no code runs on load).
Writes are atomic (temporary file, fsync, rename) so a crash never leaves a half-written file.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biounet import __version__
from biounet.config import ModelConfig, dataclass_from_dict, to_plain
from biounet.errors import BiounetError
from biounet.models import build_model

log = logging.getLogger(__name__)

FORMAT = "biounet-checkpoint"
FORMAT_VERSION = 1
PIPELINE_FORMAT = "biounet-fundus-pipeline"
ENSEMBLE_FORMAT = "biounet-ensemble"
# what a file given as a checkpoint is instead, by its first bytes (named in the error)
FILE_KINDS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"\x89HDF": "an HDF5 file",
}


@dataclass
class Checkpoint:
    model_config: ModelConfig
    labels: tuple[str, ...]
    preprocess: dict[str, Any]  # image_size, resize, normalize, in_channels
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any]  # epoch, metrics, run config, ...

    def build(self) -> nn.Module:
        """The model with these weights, in eval mode (the caller asked for a loaded model to run)."""
        model = build_model(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(
    path: Path,
    model: nn.Module,
    model_config: ModelConfig,
    labels: tuple[str, ...],
    preprocess: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "biounet_version": __version__,
        "model_config": to_plain(model_config.__dict__),
        "labels": list(labels),
        "preprocess": to_plain(preprocess),
        "state_dict": state,
        "extra": to_plain(extra or {}),
    }
    atomic_torch_save(payload, Path(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# what a run folder given as --checkpoint stands for, in this order: a fundus pipeline's file, a
# training run's best epoch, train-em's model
RUN_CHECKPOINTS = ("fundus.pt", "best.pt", "model.pt")


def read_payload(path: Path) -> dict[str, Any]:
    """The file's dict, loaded without executing code; clear one-line errors for anything else."""
    path = Path(path)
    if path.is_dir():  # a run folder: its checkpoint
        found = [path / n for n in RUN_CHECKPOINTS if (path / n).is_file()]
        if not found:
            raise BiounetError(
                f"{path}: a folder without a checkpoint ({', '.join(RUN_CHECKPOINTS)}); "
                "--checkpoint takes a .pt file or a run folder"
            )
        path = found[0]
    if not path.is_file():
        raise BiounetError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise BiounetError(f"{path}: not a readable checkpoint (the file is empty)")
    with path.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..); files from torch < 1.6 are a pickle stream (0x80)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        kind = next((k for magic, k in FILE_KINDS.items() if head.startswith(magic)), None)
        what = kind or f"it starts with {head!r}"
        raise BiounetError(
            f"{path}: not a readable checkpoint (not a file written by torch.save: {what}); "
            "give a biounet .pt file or a run folder"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the class or function it would have had to import ("GLOBAL posix.system");
        # without one the pickle stream itself is broken
        if "global" not in str(e).lower():
            raise BiounetError(
                f"{path}: not a readable checkpoint (corrupt or another format)"
            ) from e
        raise BiounetError(
            f"{path}: refused: the file holds objects other than weights and plain data "
            f"(a biounet checkpoint never does; loading it could run code)"
        ) from e
    except Exception as e:  # torch's unpickler raises anything for a file that is no checkpoint
        why = str(e).strip() or type(e).__name__
        raise BiounetError(
            f"{path}: not a readable checkpoint (truncated or another format): {why}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") not in (
        FORMAT,
        PIPELINE_FORMAT,
        ENSEMBLE_FORMAT,
    ):
        raise BiounetError(f"{path}: not a biounet checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise BiounetError(
            f"{path}: checkpoint format {payload.get('format_version')} (biounet "
            f"{payload.get('biounet_version')}); this biounet {__version__} reads format {FORMAT_VERSION}"
        )
    return payload


def payload_to_checkpoint(payload: dict[str, Any], path: Path | str = "checkpoint") -> Checkpoint:
    try:
        return Checkpoint(
            model_config=dataclass_from_dict(ModelConfig, payload["model_config"]),
            labels=tuple(payload["labels"]),
            preprocess=dict(payload["preprocess"]),
            state_dict=dict(payload["state_dict"]),
            extra=payload.get("extra", {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BiounetError(f"{path}: incomplete biounet checkpoint (missing or bad {e})") from e


def load_checkpoint(path: Path) -> Checkpoint:
    """A single-model checkpoint (``biounet train``'s best.pt / last.pt)."""
    payload = read_payload(path)
    if payload["format"] != FORMAT:
        kind = "an ensemble" if payload["format"] == ENSEMBLE_FORMAT else "a fundus pipeline"
        raise BiounetError(
            f"{path}: {kind} checkpoint, not a single model; use it with predict/evaluate"
        )
    return payload_to_checkpoint(payload, path)


@dataclass
class PipelineCheckpoint:
    """Several models that run together (the fundus pipeline: 'locator' and 'roi') and their settings."""

    parts: dict[str, Checkpoint]
    settings: dict[str, Any]


def save_pipeline(path: Path, parts: dict[str, Path], settings: dict[str, Any]) -> None:
    """Bundle single-model checkpoint files into one pipeline file."""
    save_pipeline_payload(path, {name: read_payload(p) for name, p in parts.items()}, settings)


def save_pipeline_payload(
    path: Path, parts: dict[str, dict[str, Any]], settings: dict[str, Any]
) -> None:
    payload = {
        "format": PIPELINE_FORMAT,
        "format_version": FORMAT_VERSION,
        "biounet_version": __version__,
        "parts": parts,
        "settings": to_plain(settings),
    }
    atomic_torch_save(payload, Path(path))


@dataclass
class EnsembleCheckpoint:
    """Single models with the same labels whose probabilities predict averages (``biounet
    ensemble`` of training runs, e.g. the folds of ``biounet cv``); each prepares the image as
    its own training did."""

    members: list[Checkpoint]
    settings: dict[str, Any]


def save_model_ensemble(members: list[Path], out: Path) -> Path:
    """Bundle single-model checkpoints (files or run folders) into one ensemble file at ``out``
    (a new file). BiounetError naming the member that is not a padded single model or whose
    labels differ from the first's."""
    if Path(out).exists():
        raise BiounetError(
            f"{out}: exists; ensemble never overwrites a file (choose another --out)"
        )
    if len(members) < 2:
        raise BiounetError("ensemble: give at least two members")
    payloads = []
    for path in members:
        payload = read_payload(path)
        if payload["format"] != FORMAT:
            raise BiounetError(
                f"{path}: not a single-model checkpoint (a fundus pipeline or an ensemble); "
                "an ensemble's members are all single models or all fundus pipelines"
            )
        ck = payload_to_checkpoint(payload, path)
        if ck.model_config.arch == "unet_valid":
            raise BiounetError(f"{path}: an unpadded (EM) model; ensembles take padded U-Nets")
        first = payloads[0]["labels"] if payloads else ck.labels
        if tuple(ck.labels) != tuple(first):
            raise BiounetError(
                f"{path}: labels {', '.join(ck.labels)}; the first member's are {', '.join(first)}"
            )
        if stored_thresholds(ck):
            log.warning(
                "%s: its saved thresholds are not the ensemble's (it cuts at 0.5); choose the "
                "ensemble's with biounet choose-thresholds --save",
                path,
            )
        payloads.append(payload)
    atomic_torch_save(
        {
            "format": ENSEMBLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "biounet_version": __version__,
            "members": payloads,
            "settings": {"ensemble_of": [str(p) for p in members]},
        },
        Path(out),
    )
    return Path(out)


def load_any(path: Path) -> Checkpoint | PipelineCheckpoint | EnsembleCheckpoint:
    payload = read_payload(path)
    if payload["format"] == FORMAT:
        return payload_to_checkpoint(payload, path)
    if payload["format"] == ENSEMBLE_FORMAT:
        members = payload.get("members")
        if not isinstance(members, list) or not members:
            raise BiounetError(f"{path}: incomplete ensemble checkpoint (no members)")
        return EnsembleCheckpoint(
            [payload_to_checkpoint(m, f"{path} [member {k}]") for k, m in enumerate(members)],
            payload.get("settings", {}),
        )
    parts_in = payload.get("parts")
    if not isinstance(parts_in, dict) or not {"locator", "roi"} <= set(parts_in):
        raise BiounetError(
            f"{path}: incomplete pipeline checkpoint (needs parts 'locator' and 'roi')"
        )
    parts = {k: payload_to_checkpoint(v, f"{path} [{k}]") for k, v in parts_in.items()}
    return PipelineCheckpoint(parts, payload.get("settings", {}))


def stored_thresholds(ck: Checkpoint | PipelineCheckpoint | EnsembleCheckpoint) -> dict[str, float]:
    """The per-label thresholds saved in ``ck`` by ``choose-thresholds --save`` ({} if none):
    a single model keeps them in its ``extra``, a pipeline or an ensemble in its ``settings``."""
    where = ck.extra if isinstance(ck, Checkpoint) else ck.settings
    return {str(k): float(v) for k, v in (where.get("label_thresholds") or {}).items()}


def save_with_thresholds(src: Path, dst: Path, thresholds: dict[str, float], note: str) -> None:
    """A copy of the checkpoint at ``src`` (a file or run folder) at ``dst`` with ``thresholds``
    (label -> threshold) as the ones predict and evaluate cut at unless given others, and
    ``note`` saying how they were chosen. The weights are copied as they are."""
    payload = read_payload(src)
    where = "extra" if payload["format"] == FORMAT else "settings"
    payload[where] = {
        **payload.get(where, {}),
        "label_thresholds": {k: float(v) for k, v in thresholds.items()},
        "label_thresholds_chosen": note,
    }
    atomic_torch_save(payload, Path(dst))
