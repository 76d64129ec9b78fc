"""A dataset folder: ``images/<stem>.<ext>`` + ``masks/<label>/<stem>.png`` (or ``masks/<stem>.png`` for
one label), with an optional ``splits.json`` ({"train": [...], "test": [...]})."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from biounet.data.io import IMAGE_EXTENSIONS
from biounet.errors import BiounetError

log = logging.getLogger(__name__)

SINGLE_LABEL = "foreground"


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    masks: dict[str, Path] = field(
        default_factory=dict
    )  # label -> mask path (only those that exist)
    weight: float = 1.0  # sampling weight in training (several datasets: see biounet.data.sources)


def list_images(folder: Path) -> dict[str, Path]:
    """stem -> image path for the image files directly in ``folder``; duplicate stems are an error."""
    if not folder.is_dir():
        raise BiounetError(f"{folder}: folder not found")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    dups = [s for s, n in Counter(p.stem for p in files).items() if n > 1]
    if dups:
        raise BiounetError(
            f"{folder}: several images share the stem(s) {dups[:5]}; stems must be unique"
        )
    return {p.stem: p for p in files}


# lossless first; JPEG masks (0/255 with compression's grey edges) are cut at 128 (read_mask)
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".gif", ".jpg", ".jpeg")


def mask_layout(root: Path) -> dict[str, Path]:
    """label -> folder holding that label's masks. A ``masks/`` with image files directly in it is
    one label named ``foreground``."""
    mdir = root / "masks"
    if not mdir.is_dir():
        return {}
    subdirs = {p.name: p for p in sorted(mdir.iterdir()) if p.is_dir()}
    direct = [p for p in mdir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if direct and not subdirs:
        return {SINGLE_LABEL: mdir}
    return subdirs


def discover(root: Path) -> list[Sample]:
    """Every image under ``root/images`` with whatever masks exist for it."""
    root = Path(root)
    if not root.is_dir():
        raise BiounetError(f"{root}: dataset folder not found")
    if not (root / "images").is_dir():
        loose = sorted(
            p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        raise BiounetError(
            f"{root / 'images'}: folder not found; a dataset folder holds images/<stem>.png and "
            "masks/<label>/<stem>.png (or masks/<stem>.png for one label)"
            + (
                f"; {root} holds {len(loose)} image files directly (e.g. {loose[0].name}): move "
                "the images into images/ and the masks into masks/"
                if loose
                else ""
            )
        )
    images = list_images(root / "images")
    if not images:
        raise BiounetError(
            f"{root / 'images'}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    files = {lb: mask_files(folder, set(images)) for lb, folder in mask_layout(root).items()}
    return [
        Sample(stem, img, {lb: fs[stem] for lb, fs in files.items() if stem in fs})
        for stem, img in images.items()
    ]


def mask_files(folder: Path, image_stems: set[str] | None = None) -> dict[str, Path]:
    """image stem -> mask file in ``folder`` (extensions of MASK_EXTENSIONS, any case); where a
    stem has several, the first in MASK_EXTENSIONS' order: a lossless file before a JPEG.
    A mask shares its image's stem; where none does and every mask's stem is an image's stem plus
    one same suffix (ISIC's ``<stem>_segmentation.png``, ``<stem>_mask.png``), that suffix
    pairs them, and the log says so."""
    best: dict[str, tuple[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        ext = p.suffix.lower()
        if ext in MASK_EXTENSIONS and p.is_file():
            rank = MASK_EXTENSIONS.index(ext)
            if p.stem not in best or rank < best[p.stem][0]:
                best[p.stem] = (rank, p)
    files = {stem: p for stem, (_, p) in best.items()}
    if not image_stems or not files or image_stems & files.keys():
        return files
    suffix = common_suffix(list(files), image_stems)
    if suffix is None:
        return files
    if (folder, suffix) not in _SAID:  # once per folder, however often the folder is read
        _SAID.add((folder, suffix))
        log.info("%s: masks paired with images as <image stem>%s", folder, suffix)
    return {stem[: -len(suffix)]: p for stem, p in files.items()}


_SAID: set[tuple[Path, str]] = set()


def common_suffix(mask_stems: list[str], image_stems: set[str]) -> str | None:
    """The one non-empty suffix that makes every mask stem an image stem plus it (the longest
    image stem that begins a mask stem is its image), or None."""
    suffixes = set()
    for m in mask_stems:
        cut = next((k for k in range(len(m) - 1, 0, -1) if m[:k] in image_stems), None)
        if cut is None:
            return None
        suffixes.add(m[cut:])
        if len(suffixes) > 1:
            return None
    return suffixes.pop() if suffixes else None


def read_splits(root: Path) -> dict[str, list[str]] | None:
    path = Path(root) / "splits.json"
    if not path.is_file():
        return None
    try:
        splits = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BiounetError(f"{path}: cannot read splits ({e})") from e
    if not isinstance(splits, dict):
        raise BiounetError(f"{path}: expected a JSON object of split name -> list of stems")
    return {
        k: v
        for k, v in splits.items()
        if isinstance(v, list) and all(isinstance(s, str) for s in v)
    }


def select_split(root: Path, samples: list[Sample], split: str | None) -> list[Sample]:
    """Samples of ``split`` from splits.json; all samples when ``split`` is None or "all".
    Without splits.json only "all" (or None) is allowed, so a test set is never used by accident."""
    if split in (None, "all"):
        return samples
    splits = read_splits(root)
    if splits is None:
        raise BiounetError(
            f"{root}: no splits.json, so split {split!r} is unknown; use --split all"
        )
    if split not in splits:
        raise BiounetError(f"{root}/splits.json: no split {split!r}; it has {sorted(splits)}")
    by_stem = {s.stem: s for s in samples}
    missing = [s for s in splits[split] if s not in by_stem]
    if missing:
        raise BiounetError(
            f"{root}/splits.json: split {split!r} names stems with no image: {missing[:5]}"
        )
    return [by_stem[s] for s in splits[split]]


def select_stems(
    samples: list[Sample], stems: tuple[str, ...] | list[str], where: str
) -> list[Sample]:
    """The samples named in ``stems``, in ``samples`` order; a stem not among them is an error
    naming ``where`` (e.g. "data/splits.json split 'train'")."""
    have = {s.stem for s in samples}
    missing = [s for s in stems if s not in have]
    if missing:
        raise BiounetError(f"{where}: no image for stem(s) {missing[:5]} of train_stems")
    wanted = set(stems)
    return [s for s in samples if s.stem in wanted]


def resolve_labels(
    samples: list[Sample],
    labels: tuple[str, ...] | list[str],
    root: Path,
    source: str = "--labels",
    drop_partial: bool = False,
) -> tuple[str, ...]:
    """Check the requested labels exist for every sample; with none requested, take every label
    that every sample has (an error where some images lack one; with ``drop_partial``, a warning
    naming them, for callers that cannot be told which labels to take). ``source``: where the
    requested labels come from, for the error message."""
    available = sorted(set().union(*(s.masks for s in samples))) if samples else []
    if not labels:
        labels = [lb for lb in available if all(lb in s.masks for s in samples)]
        lacking = {lb: [s.stem for s in samples if lb not in s.masks] for lb in available}
        if not labels:
            detail = "".join(f"; {lb!r} has no mask for {st[:5]}" for lb, st in lacking.items())
            raise BiounetError(
                f"{root}/masks: no label has a mask for every image (found {available}){detail}"
                + pairing_hint(root, samples)
            )
        partial = [lb for lb in available if lb not in labels]
        if partial and drop_partial:
            log.warning(
                "%s/masks: training on %s; %s lack masks for some images and are not used",
                root,
                ", ".join(map(repr, labels)),
                ", ".join(map(repr, partial)),
            )
        elif partial:  # never drop a label silently: the user may have lost a file
            lb = partial[0]
            folder = mask_layout(root).get(lb, root / "masks")
            raise BiounetError(
                f"{folder}: no mask for image(s) {lacking[lb][:5]}; add them, or train without "
                f"{', '.join(map(repr, partial))} with --labels {','.join(labels)}"
                + pairing_hint(root, samples)
            )
    # one folder of masks with one requested name: rename 'foreground' to it
    if len(labels) == 1 and available == [SINGLE_LABEL] and labels[0] != SINGLE_LABEL:
        for s in samples:
            if SINGLE_LABEL in s.masks:
                s.masks[labels[0]] = s.masks.pop(SINGLE_LABEL)
        available = [labels[0]]
    for lb in labels:
        if lb not in available:
            raise BiounetError(f"{source}: unknown label {lb!r}; {root}/masks has {available}")
        lacking = [s.stem for s in samples if lb not in s.masks]
        if lacking:
            folder = mask_layout(root).get(lb, root / "masks")
            raise BiounetError(
                f"{folder}: no mask for image(s) {lacking[:5]}" + pairing_hint(root, samples)
            )
    return tuple(labels)


def pairing_hint(root: Path, samples: list[Sample]) -> str:
    """For an error about missing masks: how masks pair with images, and a mask file of each
    label folder that paired with no image (a naming scheme biounet did not recognise), or ""."""
    unpaired = []
    for lb, folder in mask_layout(root).items():
        used = {s.masks[lb] for s in samples if lb in s.masks}
        spare = [p.name for p in mask_files(folder).values() if p not in used]
        if spare:
            unpaired.append(f"{folder} holds {spare[:3]}")
    if not unpaired:
        return ""
    return (
        f". Masks pair with images by stem (images/<stem>.jpg with masks/<label>/<stem>.png), or "
        f"by the stem and one suffix shared by all (<stem>_mask.png); unpaired: "
        f"{'; '.join(unpaired)}, images e.g. {[s.image.name for s in samples[:3]]}"
    )


def check_invert(invert: tuple[str, ...] | list[str], labels: tuple[str, ...]) -> None:
    """``--invert-masks`` names labels being used: a typo would silently invert nothing."""
    unknown = [lb for lb in invert if lb not in labels]
    if unknown:
        raise BiounetError(
            f"--invert-masks: unknown label(s) {unknown}; the labels are {list(labels)}"
        )
