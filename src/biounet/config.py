"""One configuration object for a run, built once (by the CLI or by user code) and passed down.

``RunConfig`` holds three frozen parts: what data (``DataConfig``), which network (``ModelConfig``)
and how to train (``TrainConfig``). All of it round-trips through plain dicts and YAML so that a
run folder's ``config.yaml`` and a checkpoint describe the run completely.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from biounet.errors import BiounetError
from biounet.memory import check_reuse_memory


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a U-Net or one of its family.

    ``arch``: ``"unet"``, ``"unet_valid"`` (the paper's unpadded convs), ``"attention_unet"`` or
    ``"unet_plus_plus"``. ``up_mode``: ``"transpose"`` (2x2 transposed conv, the paper) or
    ``"nearest_conv"`` (x2 nearest upsampling then 3x3 conv + norm + ReLU, the article's code);
    UNet++ also takes the parameter-free ``"nearest"`` and ``"bilinear"``. ``norm``: ``"batch"``
    or ``"none"``. UNet++ only: ``deep_supervision`` puts a head on every top node X^{0,j};
    ``prune_level`` = p in 1..depth runs only the sub-network up to X^{0,p} (0 = the whole net).
    """

    arch: str = "unet"
    in_channels: int = 3
    out_channels: int = 2
    base_width: int = 16
    depth: int = 4
    norm: str = "batch"
    up_mode: str = "transpose"
    bias: bool = False
    deep_supervision: bool = False
    prune_level: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are prepared for the network.

    ``image_size``: the square side the network sees (images are padded to a square, then resized).
    ``invert_masks``: labels whose stored masks mark the object with 0 (e.g. ISBI 2012 membranes).
    ``root``: a dataset folder, or a YAML/JSON file listing several (``biounet.data.sources``).
    ``val_fraction``: share of the training split held out for model selection (the best epoch);
    0 (and no splits.json "val" list) trains on every image and keeps the last epoch as
    ``best.pt``, its validation scores then on one training image, a sanity check only.
    ``camera_augment``: also colour cast, uneven illumination, blur, noise and JPEG
    (``biounet.data.camera``), for models that must work on other cameras and clinics.
    ``colour_augment``: also saturation (down to grey) and per-channel gamma
    (``biounet.data.camera.colour_augment``): colour relations the per-image z-score keeps.
    ``train_stems``: when set, only these stems of the training split are used (cross-validation
    folds select images this way, without copying data); the validation images are then a
    ``val_fraction`` of them, and a splits.json "val" list is not used.
    ``patch_size``: 0 trains on the whole ``image_size`` images; else on random square crops of
    that side from them (``biounet.train_data.patches_per_image`` per image and epoch, so an
    epoch sees as many pixels), more and smaller steps for thin structures on large images.
    Validation and prediction still run whole images (the U-Net is fully convolutional).
    """

    root: str = ""
    labels: tuple[str, ...] = ()
    image_size: int = 256
    invert_masks: tuple[str, ...] = ()
    train_split: str = "train"
    val_fraction: float = 0.2
    augment: bool = True
    train_stems: tuple[str, ...] = ()
    camera_augment: bool = False
    colour_augment: bool = False
    patch_size: int = 0


CHECKPOINTING_SCOPES = ("off", "top", "all")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe. ``precision``: ``"auto"`` (bf16 autocast where the CPU/GPU has it), ``"bf16"``
    or ``"fp32"``. ``lr_step``/``lr_gamma`` define StepLR; ``lr_step=0`` means a constant rate;
    ``lr_schedule="cosine"`` decays cosine-wise to 1 % of ``lr`` over ``epochs`` instead.
    ``deterministic``: deterministic kernels only (a resumed run then matches an uninterrupted one
    bit for bit on the same machine and thread count). ``sync_bn``: batch-norm statistics over all
    processes of a distributed run (CUDA only). ``compile``: ``torch.compile`` the model (needs a C++
    compiler on CPU; the first steps are slow while it compiles). ``precision="fp16"`` (CUDA only)
    trains with a loss scaler; "auto" picks it on GPUs without bf16. ``adam_impl``: "auto" (fused
    where PyTorch has it), "fused", "foreach" or "loop" (``biounet.optim.make_adam``).
    ``activation_checkpointing``: recompute blocks' activations during backward
    (``biounet.fast.apply_checkpointing``): "off"; "top" (the blocks of the three finest levels but
    the last); "all" (every block). Classic U-Net, 512 px, batch 4 on the 2-core CPU: peak RSS
    6.0 GB off (freed memory kept), 2.7 GB top at 0.72x the speed, 2.5 GB all at 0.65x
    (``benchmarks/speed.py``; "auto" ``reuse_memory`` is off with checkpointing).
    ``True``/``False`` (older configs) read as "all"/"off". ``pixel_weight``: how much each pixel
    counts in the loss (``biounet.losses.pixel_weights``): "uniform" or "polar_area" (for polar crops).
    ``reuse_memory``: "auto" (on for CPU training without activation checkpointing), "on" or "off":
    freed memory kept in the process for the next step (``biounet.memory``; the classic U-Net at
    512 px, batch 4: 1.45x the speed, 6.1 instead of 4.0 GB peak RSS)."""

    epochs: int = 40
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step: int = 0
    lr_gamma: float = 0.1
    lr_schedule: str = "step"
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = True
    threshold: float = 0.5
    max_minutes: float = 0.0
    deterministic: bool = False
    sync_bn: bool = False
    compile: bool = False
    tensorboard: bool = False
    adam_impl: str = "auto"
    activation_checkpointing: str = "off"
    pixel_weight: str = "uniform"
    reuse_memory: str = "auto"

    def __post_init__(self) -> None:
        check_reuse_memory(self.reuse_memory)
        ck = self.activation_checkpointing
        if isinstance(ck, bool):  # configs and checkpoints written before the scopes existed
            object.__setattr__(self, "activation_checkpointing", "all" if ck else "off")
        elif ck not in CHECKPOINTING_SCOPES:
            raise BiounetError(
                f"activation_checkpointing must be 'off', 'top' or 'all', got {ck!r}"
            )


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "small"

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = sorted(set(d) - {"data", "model", "train", "preset"})
        if unknown:  # a misspelled section would otherwise be dropped with all its settings
            raise BiounetError(
                f"unknown config sections {unknown}; valid: ['data', 'model', 'preset', 'train']"
            )
        return cls(
            data=dataclass_from_dict(DataConfig, d.get("data", {})),
            model=dataclass_from_dict(ModelConfig, d.get("model", {})),
            train=dataclass_from_dict(TrainConfig, d.get("train", {})),
            preset=d.get("preset", "small"),
        )

    def save_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: Path) -> RunConfig:
        try:
            d = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise BiounetError(f"{path}: cannot read config: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise BiounetError(f"{path}: cannot read config: {problem}{where}") from e
        if not isinstance(d, dict):
            raise BiounetError(f"{path}: config must be a mapping, got {type(d).__name__}")
        return cls.from_dict(d)


def to_plain(x: Any) -> Any:
    """Tuples to lists, recursively, so YAML and ``torch.load(weights_only=True)`` accept it."""
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_plain(v) for v in x]
    return x


def dataclass_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``d``; unknown keys are an error naming them."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise BiounetError(f"unknown {cls.__name__} keys {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        default = getattr(cls(), k)
        if isinstance(default, tuple) and isinstance(v, str):  # "disc" for ("disc",)
            v = tuple(x.strip() for x in v.split(",") if x.strip())
        kwargs[k] = tuple(v) if isinstance(default, tuple) and v is not None else v
        kwargs[k] = _checked(cls, k, default, kwargs[k])
    return cls(**kwargs)


def _checked(cls: type, key: str, default: Any, value: Any) -> Any:
    """``value`` for a field whose default is ``default``: a number, flag or text where the default
    is one, so "one" for an int stops here, naming the key, not deep inside training. Numbers
    written as text ("1e-3", which YAML 1.1 reads as a string; "20") are converted; ints pass for
    floats, paths for text; None passes anywhere."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: refused below
                value = int(value) if isinstance(default, int) else float(value)
        kinds = (int,) if isinstance(default, int) else (int, float)
        ok = isinstance(value, kinds) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str | os.PathLike)
    else:
        return value
    if not ok:
        expected = "true or false" if isinstance(default, bool) else type(default).__name__
        raise BiounetError(
            f"{cls.__name__}.{key}: expected {expected}, got {value!r} ({type(value).__name__})"
        )
    return value


# Per-preset training defaults. The article's recipe for "seed": Adam 1e-4, StepLR(10, 0.1), 50 epochs, 224 px.
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {
        "epochs": 50,
        "lr": 1e-4,
        "lr_step": 10,
        "lr_gamma": 0.1,
        "batch_size": 4,
        "image_size": 224,
    },
    "paper": {
        "epochs": 50,
        "lr": 1e-4,
        "lr_step": 10,
        "lr_gamma": 0.1,
        "batch_size": 4,
        "image_size": 256,
    },
    "small": {"epochs": 60, "lr": 2e-3, "lr_step": 0, "batch_size": 8, "image_size": 256},
    "medium": {"epochs": 60, "lr": 1e-3, "lr_step": 0, "batch_size": 8, "image_size": 256},
}
# The family trains with its U-Net's recipe, so comparisons change only the architecture.
RECIPES |= {"attention_seed": RECIPES["seed"], "unetpp_seed": RECIPES["seed"]}
RECIPES |= {"attention_small": RECIPES["small"], "unetpp_small": RECIPES["small"]}


def recipe(preset: str) -> dict[str, Any]:
    """The training defaults of ``preset`` (``RECIPES``; other presets take "small"'s): what
    ``biounet train --preset P`` and ``biounet.fit({"preset": P, ...})`` use where not given."""
    return dict(RECIPES.get(preset, RECIPES["small"]))


def with_recipe(cfg: RunConfig, given_train: set[str], given_data: set[str]) -> RunConfig:
    """``cfg`` with its preset's recipe in the train fields and image size not in ``given_*``;
    the schedule, where not given, StepLR when the recipe steps the rate, else constant (as the
    CLI builds it)."""
    r = recipe(cfg.preset)
    train = {k: r[k] for k in ("epochs", "lr", "lr_step", "lr_gamma", "batch_size") if k in r}
    train = {k: v for k, v in train.items() if k not in given_train}
    if "lr_schedule" not in given_train:
        step = cfg.train.lr_step if "lr_step" in given_train else r.get("lr_step", 0)
        train["lr_schedule"] = "step" if step else "constant"
    data = {"image_size": r["image_size"]} if "image_size" not in given_data else {}
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, **train),
        data=dataclasses.replace(cfg.data, **data),
    )
