"""The Python API: ``load_model``, ``fit`` and ``evaluate`` for notebooks and scripts.

    import biounet
    model = biounet.load_model("runs/r1/best.pt")      # or a fundus pipeline's fundus.pt
    result = model.predict(image)                      # numpy (H, W) / (H, W, C), or a path
    result.masks["disc"]                               # (H, W) bool at the input's size
    result.prob                                        # (L, H, W) float32 in [0, 1], L = len(model.labels)

Everything here is a thin layer over the functions the CLI calls (``biounet.predictor``,
``biounet.train.fit``, ``biounet.evaluate.evaluate_checkpoint``), so both give the same numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from biounet.config import RunConfig, with_recipe
from biounet.errors import BiounetError
from biounet.predictor import Prediction, PredictOptions, make_predictor, threshold_fields

log = logging.getLogger(__name__)

__all__ = ["Model", "Prediction", "evaluate", "fit", "load_model"]


class Model:
    """A loaded biounet checkpoint, ready to predict. Build it with ``load_model``.

    ``labels``: the names of the L output channels, in order (e.g. ``("cup", "disc")``).
    ``kind``: ``"model"`` (one U-Net, ``best.pt``) or ``"fundus_pipeline"`` (``fundus.pt``).
    """

    def __init__(self, predictor: Any, path: Path) -> None:
        self._predictor = predictor
        self.path = path
        self.labels: tuple[str, ...] = tuple(predictor.labels)
        self.kind = "fundus_pipeline" if hasattr(predictor, "inner") else "model"

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, kind={self.kind!r}, labels={self.labels})"

    def predict(self, image: np.ndarray | str | Path) -> Prediction:
        """Segment one image.

        ``image``: a path to an image file, or a numpy array (H, W) or (H, W, C) with C in 1..4
        (alpha is dropped), of dtype uint8, uint16, float or bool. Arrays are prepared exactly as a
        file holding them would be: uint8 as is, bool and float in [0, 1] x 255, other data
        scaled per image between its 0.5th and 99.5th percentiles.

        Returns a ``Prediction`` at the input's own (H, W):
        ``prob`` (L, H, W) float32 probabilities; ``masks`` {label: (H, W) bool} (the final masks:
        thresholded and, for the fundus pipeline, post-processed); ``measures`` (cup-to-disc ratios
        and rim widths when the labels include disc and cup, else empty); ``flags`` (doubtful-case
        notes from the fundus pipeline, e.g. ``"disc_not_found"``). The fundus pipeline's
        ``measures`` also hold the ROI used (``roi_cy``, ``roi_cx``, ``roi_side``) and
        ``input_kind`` ("full" or "crop"); where no disc was found (``disc_not_found``,
        ``empty_disc``) every measure is NaN, as ``predict`` writes them.
        """
        from biounet.predict import reported_measures

        p = self._predictor.predict(as_image(image))
        p.measures = reported_measures(p)
        return p

    def predict_many(
        self, images: Iterable[np.ndarray | str | Path], batch_size: int = 4
    ) -> Iterator[Prediction]:
        """``predict`` for each of ``images`` (paths or arrays, any sizes), yielded in order as
        they are done, so a long list or a generator never sits in memory at once. A single
        U-Net runs ``batch_size`` images through the network together (faster than one by one:
        on a 2-core CPU the small preset at 256 px runs about 1.6 x as many images per second
        at batch 4 as at batch 1, benchmarks/results/speed.md); fundus pipelines and EM models read
        them one at a time. The results are
        the same as ``predict``'s. An image that cannot be read or used raises, naming the file
        or the array's position in ``images``."""
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        pred = self._predictor
        size = batch_size if hasattr(pred, "predict_batch") else 1
        chunk: list[np.ndarray] = []
        for i, image in enumerate(images):
            if isinstance(image, str | Path):
                chunk.append(as_image(image))  # its errors name the file
            else:
                try:
                    chunk.append(as_image(image))
                except (ValueError, BiounetError) as e:
                    raise type(e)(f"images[{i}]: {e}") from e
            if len(chunk) == size:
                yield from self._finish(chunk)
                chunk = []
        if chunk:
            yield from self._finish(chunk)

    def _finish(self, chunk: list[np.ndarray]) -> list[Prediction]:
        from biounet.predict import reported_measures

        pred = self._predictor
        preds = pred.predict_batch(chunk) if len(chunk) > 1 else [pred.predict(chunk[0])]
        for p in preds:
            p.measures = reported_measures(p)
        return preds


def as_image(image: np.ndarray | str | Path) -> np.ndarray:
    """A path or array -> (H, W, C) uint8 with C = 1 or 3 (see ``Model.predict``)."""
    from biounet.data.io import image_from_array, read_image

    if isinstance(image, str | Path):
        return read_image(Path(image))
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4) or 0 in arr.shape:
        hint = ""
        if arr.ndim == 3 and arr.shape[0] <= 4 < arr.shape[-1]:
            hint = " (channels first? np.moveaxis(image, 0, -1) puts them last)"
        raise ValueError(
            f"image: expected an array (H, W) or (H, W, C) with C <= 4, got shape {arr.shape}{hint}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"image: expected a numeric array, got dtype {arr.dtype}")
    img = image_from_array(arr, "image")
    # a read-only array (as np.asarray of a PIL image is) would make torch warn on every call
    return img if img.flags.writeable else img.copy()


def threshold_options(threshold: float | Mapping[str, float] | None) -> dict[str, Any]:
    """``PredictOptions``' threshold fields for ``threshold`` of ``load_model``/``evaluate``: a
    number, or {label: threshold} (labels not named at 0.5), or None (0.5 and the checkpoint's
    saved thresholds). ValueError outside (0, 1)."""
    if threshold is None:
        return threshold_fields(None)
    if isinstance(threshold, Mapping):
        pairs = tuple((str(lb), float(v)) for lb, v in threshold.items())
        return threshold_fields((0.5, pairs))
    return threshold_fields((float(threshold), ()))


def load_model(
    checkpoint: str | Path,
    threshold: float | Mapping[str, float] | None = None,
    precision: str = "auto",
    tta: bool = False,
    postprocess: bool = True,
    fit_ellipse: bool = False,
    tta_scales: tuple[float, ...] | None = None,
    compile: bool = False,
    reuse_memory: str = "auto",
    tile: int | None = None,
    tile_overlap: float = 0.25,
) -> Model:
    """Load any biounet checkpoint (``best.pt``/``last.pt`` of ``train``, or a fundus pipeline's
    ``fundus.pt``) for prediction on the GPU when there is one, else the CPU.

    ``threshold``: probability above which a pixel is in a mask; or per label, e.g.
    ``{"cup": 0.3}`` (the labels not named at 0.5; ``biounet choose-thresholds`` chooses them
    on labelled images); None: the thresholds saved in the checkpoint by ``choose-thresholds
    --save``, else 0.5. ``precision``: ``"auto"`` (bf16 where the hardware has it), ``"bf16"``,
    ``"fp16"`` (CUDA) or ``"fp32"``. ``tta``: flip averaging (every kind of checkpoint; EM models average their 8 rotations / flips). ``postprocess`` and ``fit_ellipse``
    apply to the fundus pipeline (one component per structure with holes filled and the cup inside
    the disc; ellipses fitted to disc and cup). ``tta_scales`` (fundus pipelines): the ROI sizes
    averaged over, as factors of the found ROI's side (default with ``tta`` (0.8, 1.0, 1.25),
    without it (1.0,); ``(1.0,)`` with ``tta`` for flips only). ``compile``: ``torch.compile`` the
    networks (a C++ compiler is needed on CPU; the first prediction waits while they compile, the
    rest run faster: for many images). ``reuse_memory``: "auto"/"on" keep freed memory in this
    process for the next image on the CPU (Linux; faster, more RSS; the setting stays for the
    process), "off" leaves malloc alone (``biounet.memory``). ``tile`` / ``tile_overlap``
    (single U-Nets): run the network on overlapping windows of this side of the prepared image,
    blended, so memory is bounded by the windows; None: whole images up to 1024 px, larger ones
    in 512 px windows; 0: always the whole image in one pass.
    ``checkpoint`` may also be a run folder (its ``fundus.pt``, ``best.pt`` or ``model.pt``). For
    the fundus pipeline, ``threshold`` also decides the disc that places the crop around it, so it
    changes the probabilities too, not only the masks.
    Raises ``BiounetError`` naming the file when it is missing or not a biounet checkpoint.
    """
    path = Path(checkpoint)
    opts = PredictOptions(
        precision=precision,
        **threshold_options(threshold),
        tta=tta,
        postprocess=postprocess,
        fit_ellipse=fit_ellipse,
        tta_scales=tta_scales,
        compile=compile,
        reuse_memory=reuse_memory,
        tile=tile,
        tile_overlap=tile_overlap,
    )
    return Model(make_predictor(path, opts), path)


def fit(
    config: RunConfig | dict[str, Any] | str | Path,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Train a U-Net; returns the run folder (best.pt, last.pt, metrics.csv, curves.png,
    config.yaml, report.html).

    ``config``: a ``RunConfig``; a dict of the same shape (``{"data": {"root": ..., "labels": [...],
    "image_size": 128}, "train": {"epochs": 20}, "preset": "small"}``: epochs, learning rate and
    its schedule, batch size and image size not given take the preset's recipe, as ``biounet
    train --preset`` does (``biounet.config.RECIPES``: "seed" the article's Adam 1e-4 with
    StepLR(10, 0.1) at 224 px), other missing values their defaults, and without a ``"model"``
    part the preset's model is used, with the input channels read from the images); or the path
    of a ``config.yaml`` written by an earlier run (as it is).
    ``out_dir``: the run folder; default ``runs/<date>-<time>`` under the current folder. A
    folder that holds a run already is refused (BiounetError) unless ``overwrite``: a notebook cell
    run twice would otherwise replace the first run. Progress is logged (``logging``, level INFO).
    """
    from biounet.train import fit as train_fit

    cfg = run_config(config)
    if not cfg.data.root:
        raise BiounetError("config: data.root (the dataset folder) is not set")
    if out_dir is None:
        out_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        log.info("run folder: %s", out_dir)
    if not overwrite:
        from biounet.runlock import refuse_existing_run

        refuse_existing_run(Path(out_dir), "pass another out_dir, or overwrite=True")
    return train_fit(cfg, Path(out_dir))


def run_config(config: RunConfig | dict[str, Any] | str | Path) -> RunConfig:
    """``RunConfig`` from a RunConfig, a dict or a config.yaml path (see ``fit``)."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, str | Path):
        return RunConfig.load_yaml(Path(config))
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a RunConfig, dict or path, got {type(config).__name__}")
    cfg = RunConfig.from_dict(config)
    # the preset's training recipe where the dict is silent, as biounet train --preset uses it
    given = lambda part: set(config.get(part) or {})  # noqa: E731
    cfg = with_recipe(cfg, given("train"), given("data"))
    # a pathlib.Path is natural in user code; config.yaml and checkpoints want a string
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(cfg.data.root)))
    if "model" not in config:
        from biounet.models import preset

        cfg = RunConfig(cfg.data, preset(cfg.preset, in_channels=0), cfg.train, cfg.preset)
    return cfg


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    split: str | None = None,
    out_dir: str | Path | None = None,
    threshold: float | Mapping[str, float] | None = None,
    precision: str = "auto",
    tta: bool = False,
    postprocess: bool = True,
    uncertainty: bool = False,
    tta_scales: tuple[float, ...] | None = None,
    tile: int | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on a dataset split at each mask's own resolution; returns the summary
    (also written as ``summary.json``, with ``per_image.csv`` and ``report.html``).

    ``split``: a split of the dataset's splits.json (default ``"test"``, or every image when
    there is no splits.json). ``out_dir``: default ``<checkpoint folder>/eval_<split>``
    (``eval_default`` when ``split`` is None).
    The summary's ``"labels"`` maps each label to ``dice_mean``, ``dice_std``, ``dice_median``,
    ``dice_min`` and the same for iou, precision, recall, bce, hd95 and asd (pixels), and
    ``ece`` (the calibration error of its probabilities, pixels of all images pooled).
    ``uncertainty``: also each image's uncertainty score (as ``predict --uncertainty``) and, in
    ``summary["uncertainty"]``, its AUROC for finding the images with Dice below 0.8.
    ``tta``, ``tta_scales`` and ``tile``: as in ``load_model``.
    """
    from biounet.evaluate import evaluate_checkpoint

    fields = threshold_options(threshold)  # a bad value refused before any work
    checkpoint = Path(checkpoint)
    if out_dir is None:
        out_dir = checkpoint.parent / f"eval_{split or 'default'}"
    return evaluate_checkpoint(
        checkpoint,
        Path(data),
        split,
        Path(out_dir),
        PredictOptions(
            precision=precision,
            **fields,
            tta=tta,
            postprocess=postprocess,
            tta_scales=tta_scales,
            tile=tile,
        ),
        uncertainty=uncertainty,
    )
