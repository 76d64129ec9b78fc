"""``biounet predict``: masks, probability maps, overlays and (fundus) measures for images or folders."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from biounet.data.folder import list_images
from biounet.data.io import IMAGE_EXTENSIONS, PNG_LEVEL, read_image, save_png, stack_size
from biounet.errors import BiounetError
from biounet.predictor import Prediction, PredictOptions, make_predictor
from biounet.uncertainty import image_uncertainty
from biounet.viz import overlay

log = logging.getLogger(__name__)


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given; folders expanded to the image files directly inside them (sorted)."""
    out: list[Path] = []
    empty: list[str] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = list_images(p).values()
            out.extend(found)
            if not found:
                empty.append(str(p))
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise BiounetError(
                    f"{p}: not an image file (extensions {', '.join(IMAGE_EXTENSIONS)})"
                )
            out.append(p)
        else:
            raise BiounetError(f"{p}: no such file or folder")
    if not out:
        where = f" in {', '.join(empty)}" if empty else ""
        raise BiounetError(
            f"no input images found{where} (extensions {', '.join(IMAGE_EXTENSIONS)})"
            + "".join(_subfolder_hint(Path(e)) for e in empty)
        )
    return out


def _subfolder_hint(folder: Path) -> str:
    """'; <folder> holds images in subfolders ...' where its subfolders hold images (predict
    reads the images directly in a folder, not below it), else ''."""
    subs = sorted(d.name for d in folder.iterdir() if d.is_dir() and _has_images(d))
    if not subs:
        return ""
    shown = ", ".join(f"{d}/" for d in subs[:3]) + (" ..." if len(subs) > 3 else "")
    return (
        f"; {folder} holds images in {len(subs)} subfolder(s) ({shown}): give those folders as "
        f"inputs, e.g. {folder}/*/"
    )


def _has_images(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file())
    except OSError:  # unreadable folder: no hint from it
        return False


def predict_paths(
    checkpoint: Path,
    inputs: Iterable[Path],
    out_dir: Path,
    opts: PredictOptions | None = None,
    uncertainty: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> tuple[list[Path], list[Path], list[str]]:
    """Per image ``<stem>_<label>.png`` (0/255), ``<stem>_prob_<label>.png`` (probability x 255) and
    ``<stem>_overlay.png``, at the input's size; ``measures.csv`` (one row per image) when the model
    segments a disc and a cup. Unreadable files, and images the model cannot take, are skipped
    and reported at the end.
    ``opts``: how the checkpoint is run (``biounet.predictor.PredictOptions``). ``uncertainty``: also
    ``<stem>_uncertainty.png`` and ``uncertainty.csv`` (see ``biounet.uncertainty``).

    One image is in memory at a time and the CSVs grow a row per image, so memory stays flat
    whatever the count. An image whose outputs all exist is skipped (a killed job resumes where it
    stopped); ``overwrite`` redoes it. ``show_progress``: a progress bar (on a terminal) with images/s.
    A TIFF stack (z-stack, time series) is predicted slice by slice, each slice an image of its
    own named ``<stem>_z000``, ``<stem>_z001``, ... (``expand_slices``).
    Returns (images written, images skipped: one entry per image, a stack's file once per slice;
    one error line per unreadable file)."""
    pred = make_predictor(checkpoint, opts)
    out_dir, inputs = Path(out_dir), list(inputs)  # read twice below: no generator used up
    for i in inputs:
        if Path(i).is_dir() and out_dir.resolve() == Path(i).resolve():
            raise BiounetError(
                f"{out_dir}: is also an input folder; its outputs would be read as inputs on the "
                "next run: choose another --out"
            )
    items = expand_slices(expand_inputs(inputs))
    if out_dir.is_file():
        raise BiounetError(f"{out_dir}: is a file; --out names the folder the outputs go to")
    out_dir.mkdir(parents=True, exist_ok=True)
    keep_settings(out_dir, output_settings(Path(checkpoint), opts, uncertainty), overwrite)

    def complete(stem: str) -> bool:
        return all(f.is_file() for f in output_files(out_dir, stem, pred.labels, uncertainty))

    measures = RowLog(out_dir / "measures.csv", complete, overwrite)
    unc_log = RowLog(out_dir / "uncertainty.csv", complete, overwrite)
    done, skipped, errors, doubtful = [], [], [], []
    bar = tqdm(items, desc="predict", unit="img", disable=None if show_progress else True)
    for path, page, stem in bar:
        if not overwrite and complete(stem):
            skipped.append(path)
        else:
            try:
                img = read_image(path, page)
                source = str(path) if page is None else f"{path} [slice {page}]"
                if predict_one(pred, img, stem, source, out_dir, uncertainty, measures, unc_log):
                    doubtful.append(stem)
            except BiounetError as e:
                errors.append(str(e))
            except (
                ValueError,
                RuntimeError,
            ) as e:  # an image the model cannot take: the rest go on
                log.debug("%s", path, exc_info=True)
                errors.append(f"{path}: prediction failed ({type(e).__name__}: {e})")
            else:
                done.append(path)
        bar.set_postfix(skipped=len(skipped), unreadable=len(errors), refresh=False)
    if doubtful:
        log.warning(
            "%d of %d image(s) doubtful (DOUBTFUL in the overlay, flags in measures.csv): %s%s",
            len(doubtful),
            len(done),
            ", ".join(doubtful[:5]),
            ", ..." if len(doubtful) > 5 else "",
        )
    return done, skipped, errors


SETTINGS_FILE = "predict_settings.json"
# the options that change what predict writes (precision, backend, compile and memory reuse change
# the numbers only within rounding, and a resumed job may switch them)
OUTPUT_OPTIONS = (
    "threshold", "label_thresholds", "tta", "tta_scales", "postprocess", "fit_ellipse", "input_kind",
    "tile", "tile_overlap",
)  # fmt: skip


def output_settings(
    checkpoint: Path, opts: PredictOptions | None, uncertainty: bool
) -> dict[str, Any]:
    """What the outputs of a predict job depend on: the checkpoint file (path, size, time
    written) and the options of ``OUTPUT_OPTIONS``, as JSON values."""
    o = dataclasses.asdict(opts or PredictOptions())
    path = Path(checkpoint).resolve()
    stat = path.stat() if path.is_file() else None
    return json.loads(
        json.dumps(
            {
                "checkpoint": str(path),
                "checkpoint_bytes": stat.st_size if stat else None,
                "checkpoint_mtime_ns": stat.st_mtime_ns if stat else None,
                **{k: o[k] for k in OUTPUT_OPTIONS},
                "uncertainty": uncertainty,
            }
        )
    )


def keep_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Record ``settings`` in ``out_dir``; BiounetError when the folder holds a job written with
    other ones (its images would be skipped as done: a folder of mixed results), unless
    ``overwrite``. A folder without the record (older jobs) is taken as it is, and so are the
    settings an older record does not name."""
    path = out_dir / SETTINGS_FILE
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old == settings:
            return  # the same job resumed: the record stays as it was
        old = old if isinstance(old, dict) else {}
        # a key an older record lacks (an option added since) is not compared
        diff = ", ".join(
            f"{k} {old[k]!r} -> {v!r}" for k, v in settings.items() if k in old and old[k] != v
        )
        if diff:
            raise BiounetError(
                f"{out_dir}: holds outputs of another predict job ({diff}); its images would be "
                "skipped as done: use --overwrite or another --out"
            )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings, indent=1))
    os.replace(tmp, path)


def predict_one(
    pred: Any,
    img: np.ndarray,
    stem: str,
    source: str,
    out_dir: Path,
    uncertainty: bool,
    measures: RowLog,
    unc_log: RowLog,
) -> list[str]:
    """One image's files (named from ``stem``) and CSV rows (``source``: its file, and slice).
    The rows and the uncertainty map come first: the overlay, written last, marks the image
    done. Returns the prediction's doubt flags."""
    p = pred.predict(img)
    if uncertainty:
        umap, scores = image_uncertainty(pred, img, p)
        save_png(out_dir / f"{stem}_uncertainty.png", umap)
        unc_log.add({"stem": stem, "file": source, **scores})
    if p.measures:
        shown = reported_measures(p)
        measures.add({"stem": stem, "file": source, **shown, "flags": ";".join(p.flags)})
    write_outputs(out_dir, stem, img, p, pred.labels)
    return p.flags


def expand_slices(paths: list[Path]) -> list[tuple[Path, int | None, str]]:
    """(file, slice, output stem) per image to predict: a file as itself, a TIFF stack
    (``biounet.data.io.stack_size``) as its slices, named ``<stem>_z000``, ``<stem>_z001``, ...
    (at least three digits, more for longer stacks)."""
    out: list[tuple[Path, int | None, str]] = []
    for path in paths:
        n = stack_size(path)
        if n == 1:
            out.append((path, None, path.stem))
            continue
        digits = max(3, len(str(n - 1)))
        out += [(path, k, f"{path.stem}_z{k:0{digits}d}") for k in range(n)]
    seen: dict[str, Path] = {}
    for path, _, stem in out:
        if seen.setdefault(stem, path) != path:
            raise BiounetError(
                f"{seen[stem]} and {path}: both would write the outputs of {stem!r}; "
                "rename one or predict them into separate --out folders"
            )
    return out


def output_files(
    out_dir: Path, stem: str, labels: tuple[str, ...], uncertainty: bool
) -> list[Path]:
    """Every file predict writes for one image; the overlay, written last, comes last."""
    files = [out_dir / f"{stem}_{kind}{lb}.png" for lb in labels for kind in ("", "prob_")]
    if uncertainty:
        files.append(out_dir / f"{stem}_uncertainty.png")
    return [*files, out_dir / f"{stem}_overlay.png"]


class RowLog:
    """A CSV written a row at a time (no rows held in memory). On opening, an existing file keeps
    only the rows of images that are ``complete`` (the others are being redone); ``fresh`` starts
    it empty."""

    def __init__(self, path: Path, complete: Callable[[str], bool], fresh: bool) -> None:
        self.path, self.columns = path, None
        if fresh or not path.is_file():
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{path.name}.part")
        with open(path, newline="") as src, open(tmp, "w", newline="") as dst:
            reader = csv.DictReader(src)
            self.columns = reader.fieldnames
            w = csv.DictWriter(dst, fieldnames=self.columns or [])
            w.writeheader()
            dropped = 0
            for r in reader:
                if complete(r["stem"]):
                    w.writerow(r)
                else:
                    dropped += 1
        if dropped:
            os.replace(tmp, path)
        else:  # leave a finished job's file untouched
            tmp.unlink()

    def add(self, row: dict[str, Any]) -> None:
        new = self.columns is None
        if not new and list(row) != self.columns:
            raise BiounetError(
                f"{self.path}: written with columns {self.columns}, now {list(row)}; "
                "use --overwrite or another --out"
            )
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        self.columns = list(row)


def write_outputs(
    out_dir: Path, stem: str, img: np.ndarray, p: Prediction, labels: tuple[str, ...]
) -> None:
    """Mask, probability and overlay PNGs of one image."""
    for i, lb in enumerate(labels):
        save_png(out_dir / f"{stem}_{lb}.png", p.masks[lb].astype(np.uint8) * 255)
        save_png(
            out_dir / f"{stem}_prob_{lb}.png",
            np.clip(p.prob[i] * 255 + 0.5, 0, 255).astype(np.uint8),
        )
    ov = overlay(img, p.masks)
    text = overlay_text(p, short=min(img.shape[:2]) < SMALL_OVERLAY)
    if text:
        ov = draw_text(ov, text)
    # atomically: a job killed mid-write leaves no overlay, so the image is redone on resume
    tmp = out_dir / f".{stem}_overlay.png.part"
    Image.fromarray(np.ascontiguousarray(ov)).save(tmp, format="PNG", compress_level=PNG_LEVEL)
    os.replace(tmp, out_dir / f"{stem}_overlay.png")


NO_DISC_FLAGS = ("disc_not_found", "empty_disc")
# images with a shorter side than this get one line of text on their overlay (the CSV has the rest)
SMALL_OVERLAY = 200


def reported_measures(p: Prediction) -> dict[str, Any]:
    """The measures predict writes (CSV row, overlay): where no disc was found, none (NaN) but the
    ROI and the input kind, rather than ratios of whatever was segmented. ``evaluate`` scores the
    prediction's own measures, every image counted."""
    if not set(NO_DISC_FLAGS) & set(p.flags):
        return p.measures
    keep = ("roi_cy", "roi_cx", "roi_side", "input_kind")
    return {k: (v if k in keep else math.nan) for k, v in p.measures.items()}


def overlay_text(p: Prediction, short: bool = False) -> str:
    """The overlay's text: the cup-to-disc ratios and each doubt flag on its own line; ``short``
    (a small image, whose disc the full text would hide): "vCDR 0.51" and "DOUBTFUL" only."""
    parts = []
    m = reported_measures(p)
    if "vcdr" in m:
        if math.isnan(m["vcdr"]):
            parts.append("no disc" if short else "no disc measured")
        elif short:
            parts.append(f"vCDR {m['vcdr']:.2f}")
        else:
            parts.append(f"vCDR {m['vcdr']:.2f}  hCDR {m['hcdr']:.2f}  aCDR {m['acdr']:.2f}")
    if p.flags:  # one per line: a narrow image cuts a long line off
        parts += ["DOUBTFUL"] if short else ["DOUBTFUL:", *(f"  {f}" for f in p.flags)]
    return "\n".join(parts)


def draw_text(img: np.ndarray, text: str) -> np.ndarray:
    """Text in the top-left corner on a dark box, sized to the image."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    size = max(10, min(img.shape[:2]) // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    box = draw.multiline_textbbox((8, 8), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.multiline_text((8, 8), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)
