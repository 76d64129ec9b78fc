"""Several dataset folders in one training run: a small YAML (or JSON) file lists them, each with a
sampling weight, and ``DataConfig.root`` points at that file instead of a folder::

    datasets:
      - root: ../shared/data/drishti_gs1   # relative paths are relative to this file
        weight: 1.0                         # share of each epoch's draws (default 1)
      - root: ../shared/data/refuge_canon512
        weight: 1.0
        split: train                        # the split used for training (default: train)

Each epoch draws as many images as the sources hold together, with replacement, so that source k
supplies weight_k / sum(weights) of them whatever its size: a 50-image set weighted like a
400-image one is seen as often. The validation images are held out per source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from biounet.errors import BiounetError

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Source:
    root: Path
    weight: float = 1.0
    split: str = "train"


def is_spec(root: str | Path) -> bool:
    """True when ``root`` names a dataset-list file rather than a dataset folder."""
    return Path(root).suffix.lower() in SPEC_SUFFIXES


def read_spec(path: str | Path) -> list[Source]:
    """The sources listed in a dataset-list file; every error names the file and the entry."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BiounetError(f"{path}: cannot read the dataset list ({e.strerror or e})") from e
    import yaml

    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise BiounetError(f"{path}: not a valid dataset list ({e})") from e
    entries = doc.get("datasets") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise BiounetError(
            f"{path}: expected a non-empty 'datasets:' list of {{root, weight, split}}"
        )
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: datasets[{i}]"
        if isinstance(e, str):
            e = {"root": e}
        if not isinstance(e, dict) or not isinstance(e.get("root"), str):
            raise BiounetError(f"{where}: needs a 'root' folder")
        unknown = sorted(set(e) - {"root", "weight", "split"})
        if unknown:
            raise BiounetError(f"{where}: unknown keys {unknown}; valid: root, weight, split")
        weight = e.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise BiounetError(f"{where}: weight must be a number > 0, got {weight!r}")
        split = e.get("split", "train")
        if not isinstance(split, str):
            raise BiounetError(f"{where}: split must be a split name, got {split!r}")
        root = Path(e["root"]).expanduser()
        root = root if root.is_absolute() else path.parent / root
        if not root.is_dir():
            raise BiounetError(f"{where}: dataset folder {root} not found")
        out.append(Source(root, float(weight), split))
    return out


def batch_order(
    weights: torch.Tensor | None,
    n: int,
    batch_size: int,
    gen: torch.Generator,
    repeats: int = 1,
) -> torch.Tensor:
    """``repeats`` ``draw_order``s one after the other (each image drawn ``repeats`` times an
    epoch: patch training), less the last index when that would leave a final batch of one image
    (batch norm cannot normalise a batch of one)."""
    order = torch.cat([draw_order(weights, n, gen) for _ in range(repeats)])
    m = len(order)
    return order[:-1] if m % batch_size == 1 and m > batch_size else order


def draw_order(weights: torch.Tensor | None, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) int64 indices for one epoch: a random permutation when ``weights`` is None (all images
    alike), else n draws with replacement, image i drawn with probability weights[i] / sum."""
    if weights is None:
        return torch.randperm(n, generator=gen)
    return torch.multinomial(weights.double(), n, replacement=True, generator=gen)
