"""The ``biounet`` command: parses arguments, builds a config, calls one function per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from biounet import __version__
from biounet.cli_commands import (
    FUNDUS_ONLY,
    cmd_compare,
    cmd_cv,
    cmd_demo,
    cmd_ensemble,
    cmd_evaluate,
    cmd_export,
    cmd_export_dataset,
    cmd_import_dataset,
    cmd_model_info,
    cmd_predict,
    cmd_thresholds,
    cmd_train,
    cmd_train_em,
)
from biounet.config import CHECKPOINTING_SCOPES
from biounet.errors import BiounetError
from biounet.memory import REUSE_MEMORY

log = logging.getLogger("biounet")


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def scale_list(s: str) -> tuple[float, ...]:
    from biounet.errors import BiounetError
    from biounet.fundus.pipeline import check_scales  # only when the option is given

    try:
        return check_scales(tuple(float(x) for x in s.split(",") if x.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {s!r}"
        ) from None
    except BiounetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def csv_list(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def threshold_arg(s: str) -> tuple[float, tuple[tuple[str, float], ...]]:
    from biounet.predictor import parse_thresholds

    try:
        return parse_thresholds(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def tile_arg(s: str) -> int | None:
    """--tile's value: "auto" -> None, else a side >= 0 (0: whole images)."""
    if s.strip().lower() == "auto":
        return None
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number or auto") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v}: must be 0 (whole images) or a positive side")
    return v


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold",
        type=threshold_arg,
        default=None,
        metavar="T | LABEL=T,...",
        help="probability threshold (default: those saved in the checkpoint by choose-thresholds "
        "--save, else 0.5); per label too, e.g. cup=0.3 or 0.5,cup=0.3",
    )
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: mean over flips (fundus pipelines and single models); "
        "fundus pipelines also over ROI sizes (--tta-scales)",
    )
    p.add_argument(
        "--tta-scales",
        type=scale_list,
        default=None,
        metavar="S,S,...",
        help="fundus: ROI side factors averaged over (default with --tta 0.8,1,1.25; without, 1; "
        "--tta --tta-scales 1: flips only, about twice as fast)",
    )
    p.add_argument(
        "--no-postprocess",
        action="store_true",
        help="fundus: keep raw masks (default: one component each, holes filled, cup inside disc)",
    )
    p.add_argument(
        "--ellipse", action="store_true", help="fundus: replace disc and cup by fitted ellipses"
    )
    p.add_argument(
        "--tile",
        type=tile_arg,
        default=None,
        metavar="N | auto",
        help="single U-Nets: run the network on overlapping N x N windows of the prepared image, "
        "blended (memory bounded by the windows); 0: the whole image in one pass; auto (default): "
        "whole up to 1024 px, larger images in 512 px windows",
    )
    p.add_argument(
        "--tile-overlap",
        type=fraction,
        default=0.25,
        metavar="F",
        help="fraction of a window its neighbours overlap, in [0, 1) (default 0.25)",
    )
    add_reuse_memory(p, "on for the CPU")


def add_labelled_data(p: argparse.ArgumentParser, default_split: str) -> None:
    """--checkpoint, --data, --split (default ``default_split``), --out, --invert-masks: a
    checkpoint run on a labelled dataset split (evaluate, choose-thresholds)."""
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--split",
        default=None,
        help=f"split in splits.json (default: {default_split}, or all without splits.json)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--invert-masks", type=csv_list, help="default: as in training")


def add_reuse_memory(p: argparse.ArgumentParser, auto: str) -> None:
    p.add_argument(
        "--reuse-memory",
        choices=REUSE_MEMORY,
        default="auto",
        help=f"keep freed memory in the process for the next batch (Linux: faster, more RSS; "
        f"default auto: {auto})",
    )


class Parser(argparse.ArgumentParser):
    """argparse with biounet's one-line error format (usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"biounet: error: {message} (see {self.prog} --help)\n")


# train options that cv does not take (see cmd_cv): folds resume by themselves, and the fundus
# pipeline's options concern a pipeline that cv does not cross-validate
CV_REFUSED = {"resume", "pipeline", *FUNDUS_ONLY, "locator_epochs", "roi_scale"}


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="biounet", description="U-Net segmentation for biomedical images")
    ap.add_argument("--version", action="version", version=f"biounet {__version__}")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a U-Net on a dataset folder")
    t.add_argument(
        "--data",
        type=Path,
        help="folder with images/ and masks/, or a YAML file listing several with weights (required)",
    )
    t.add_argument("--out", type=Path, help="run folder to write (required)")
    t.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last.pt (its config.yaml; --epochs may extend it)",
    )
    t.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log each epoch's metrics for TensorBoard in RUN_DIR/tensorboard",
    )
    t.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels: repeat and resume bit for bit on the same machine",
    )
    t.add_argument(
        "--sync-bn",
        action="store_true",
        help="torchrun on CUDA: batch-norm statistics over all processes",
    )
    t.add_argument(
        "--preset",
        default="small",
        help="model preset: seed, paper, small, medium, attention_seed, unetpp_seed, "
        "attention_small, unetpp_small (default small; see `biounet model-info`)",
    )
    t.add_argument(
        "--labels", type=csv_list, help="comma-separated labels, e.g. disc,cup (default: all)"
    )
    t.add_argument(
        "--invert-masks",
        type=csv_list,
        help="labels whose masks mark the object with 0 (ISBI 2012)",
    )
    t.add_argument(
        "--in-channels",
        type=positive_int,
        choices=(1, 3),
        help="network input channels: 1 (grey) or 3 (RGB) (default: from the images); "
        "--pipeline fundus with 1: both stages on the luminance",
    )
    t.add_argument("--epochs", type=positive_int)
    t.add_argument("--batch-size", type=positive_int)
    t.add_argument("--image-size", type=positive_int, help="side of the square the network sees")
    t.add_argument(
        "--patch-size",
        type=positive_int,
        default=None,
        help="train on random square crops of this side from the --image-size images (as many "
        "pixels per epoch; validation and prediction on whole images); for thin structures",
    )
    t.add_argument("--lr", type=positive_float)
    t.add_argument(
        "--lr-schedule",
        choices=["constant", "step", "cosine"],
        help="default: the preset's (StepLR for seed/paper, constant for small/medium)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.2,
        help="share of the training split held out for validation (ignored if splits.json has 'val')",
    )
    t.add_argument(
        "--max-minutes",
        type=positive_float,
        help="stop after the epoch that passes this time budget",
    )
    t.add_argument("--no-augment", action="store_true")
    t.add_argument(
        "--camera-augment",
        action="store_true",
        help="also colour cast, uneven illumination, blur, noise, JPEG (robustness to other cameras)",
    )
    t.add_argument(
        "--colour-augment",
        action="store_true",
        help="also saturation (down to grey) and per-channel gamma (other cameras' colours)",
    )
    t.add_argument(
        "--pipeline",
        choices=["plain", "fundus"],
        default="plain",
        help="fundus: disc locator + disc-centred crop model, one fundus.pt (see README)",
    )
    t.add_argument(
        "--locator-epochs", type=positive_int, default=40, help="fundus: epochs of the disc locator"
    )
    t.add_argument(
        "--soft-targets",
        action="store_true",
        help="fundus: train the crop model on the annotators' agreement maps "
        "(DATA/softmaps/<label>/<stem>.png, 0-255 = share of annotators) instead of the masks",
    )
    t.add_argument(
        "--polar",
        action="store_true",
        help="fundus: the crop model works on the disc crops resampled to polar coordinates "
        "around their centre (recorded in the checkpoint; predict maps its output back)",
    )
    t.add_argument(
        "--locator-grey",
        action="store_true",
        help="fundus: the disc locator reads the photographs' luminance, the crop model their "
        "colour (for photographs from cameras unlike the training ones; see README)",
    )
    t.add_argument(
        "--polar-area-loss",
        action="store_true",
        help="fundus, with --polar: the crop model's loss weighs each polar pixel by the crop "
        "area it stands for, so the disc's edge counts as it does in the image",
    )
    t.add_argument(
        "--roi-scale",
        type=positive_float,
        default=2.0,
        help="fundus: crop side relative to the located disc's extent",
    )
    t.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp16", "fp32"],
        default="auto",
        help="autocast precision; auto: bf16 where the CPU/GPU has it, else fp16 on CUDA, else fp32",
    )
    t.add_argument(
        "--compile", action="store_true", help="torch.compile the model (slow first epoch)"
    )
    t.add_argument(
        "--adam",
        choices=["auto", "fused", "foreach", "loop"],
        default="auto",
        help="Adam implementation (default auto: fused where PyTorch has it)",
    )
    t.add_argument(
        "--no-channels-last", action="store_true", help="keep activations in NCHW memory order"
    )
    t.add_argument(
        "--checkpointing",
        nargs="?",
        choices=CHECKPOINTING_SCOPES,
        const="all",
        default="off",
        help="activation checkpointing: recompute blocks in backward (less memory, more compute); "
        "'top': the three finest levels only, most of the saving for a third of the cost "
        "(default off; the flag alone means all)",
    )
    add_reuse_memory(t, "on for CPU training without --checkpointing")
    t.set_defaults(func=cmd_train)

    # every train option, so a fold trains exactly as `biounet train` would (see biounet.cv)
    c = sub.add_parser(
        "cv",
        parents=[t],
        add_help=False,
        help="k-fold cross-validation on the training split",
        description="Fold K holds out every FOLDS-th image of the training split's sorted stems, "
        "from the K-th; trains on the rest with the train options below (best epoch on "
        "--val-fraction of the rest; a splits.json 'val' list is not used) and evaluates the held-out "
        "images. --out is the cv folder: fold_K/{run,eval,fold.json}, cv_summary.json.",
    )
    for action in c._actions:  # train options cv refuses (see cmd_cv): not offered in its help
        if action.dest in CV_REFUSED:
            action.help = argparse.SUPPRESS
    c.add_argument("--folds", type=positive_int, help="number of folds (default 5)")
    c.add_argument("--fold", type=int, metavar="K", help="run only fold K (0..folds-1)")
    c.add_argument("--summarize", action="store_true", help="only write OUT/cv_summary.json")
    c.set_defaults(func=cmd_cv)

    te = sub.add_parser(
        "train-em",
        help="the paper's unpadded U-Net on grey EM slices (weight map, elastic, overlap-tile)",
        description="Trains paper_valid_small (unpadded convs, 2-class softmax, weighted CE) on "
        "random tiles of the split's slices, chooses the membrane threshold by V-Rand on a held-out "
        "--val-fraction of them, writes OUT/model.pt and OUT/summary.json.",
    )
    te.add_argument("--data", type=Path, required=True, help="images/ + masks/ (one mask each)")
    te.add_argument("--out", type=Path, required=True)
    te.add_argument("--split", default="train", help="split in splits.json (default train)")
    te.add_argument("--val-fraction", type=fraction, default=0.2)
    te.add_argument(
        "--membrane-masks",
        action="store_true",
        help="masks mark membranes (default: cell interior, as ISBI 2012)",
    )
    te.add_argument("--minutes", type=positive_float, default=10.0, help="training time budget")
    te.add_argument("--max-iters", type=int, default=0, help="also stop after this many (0: no)")
    te.add_argument("--width", type=positive_int, default=16, help="first level's channels")
    te.add_argument("--out-tile", type=positive_int, default=260, help="training output tile side")
    te.add_argument("--lr", type=positive_float, default=1e-3)
    te.add_argument("--no-weight-map", action="store_true", help="class balance only (w0 = 0)")
    te.add_argument("--no-elastic", action="store_true")
    te.add_argument("--seed", type=int, default=0)
    te.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="fp32")
    te.add_argument("--device", default="auto", help="auto (CUDA where present), cpu, cuda[:N]")
    add_reuse_memory(te, "on for the CPU")
    te.set_defaults(func=cmd_train_em)

    e = sub.add_parser("evaluate", help="per-image metrics of a checkpoint on a dataset split")
    add_labelled_data(e, "test")
    e.add_argument(
        "--uncertainty",
        action="store_true",
        help="also each image's uncertainty score (as predict --uncertainty) and its AUROC for "
        "finding the images with Dice below 0.8",
    )
    add_common(e)
    e.set_defaults(func=cmd_evaluate)

    th = sub.add_parser(
        "choose-thresholds",
        help="each label's probability threshold, chosen by Dice on labelled images",
        description="Predict a dataset split's labelled images once and choose, per label, the "
        "probability threshold of the highest mean Dice (fundus pipelines: the disc's first, "
        "then the cup's with the disc at it). Choose on images the model did not learn from (a "
        "held-out split, or labelled images of the site it will be used at); the result is a "
        "--threshold value for predict and evaluate. Writes thresholds.json.",
    )
    add_labelled_data(th, "train")
    th.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="CK",
        help="also write a copy of the checkpoint that predict and evaluate cut at the chosen "
        "thresholds (unless given --threshold)",
    )
    add_common(th)
    th.set_defaults(func=cmd_thresholds)

    p = sub.add_parser("predict", help="masks, probabilities and overlays for images")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    p.add_argument(
        "--input",
        choices=["auto", "full", "crop"],
        default="auto",
        help="fundus pipeline: full photographs, disc-centred crops, or auto (default)",
    )
    p.add_argument(
        "--backend",
        choices=["torch", "ort"],
        default="torch",
        help="torch (default) or ort: ONNX Runtime, fp32 on the CPU (pip install 'biounet[onnx]')",
    )
    p.add_argument(
        "--no-fast",
        action="store_true",
        help="run the model as trained (default: batch norm folded, channels-last, bf16 weights)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks (needs a C++ compiler on CPU): the first image waits a few "
        "seconds, the rest run faster; for long lists",
    )
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also <stem>_uncertainty.png (entropy of the flip-averaged probability) and "
        "uncertainty.csv (per-image score: mean entropy around the predicted structures)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo images whose outputs exist (default: skip them, so a killed job resumes)",
    )
    add_common(p)
    p.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="write a checkpoint's model(s) as ONNX")
    x.add_argument("--checkpoint", type=Path, required=True)
    x.add_argument(
        "--out",
        type=Path,
        required=True,
        help="file to write (a fundus pipeline writes <stem>_locator.onnx and <stem>_roi.onnx)",
    )
    x.add_argument("--format", choices=["onnx"], default="onnx")
    x.set_defaults(func=cmd_export)

    cmp = sub.add_parser(
        "compare",
        help="is model B better than model A? paired per-image differences of two evaluate "
        "folders with a bootstrap confidence interval",
    )
    cmp.add_argument("a", type=Path, help="evaluate output folder of model A")
    cmp.add_argument("b", type=Path, help="evaluate output folder of model B (same split)")
    cmp.add_argument(
        "--metric",
        default="dice",
        help="a per_image.csv column: dice (default), iou, precision, recall, hd95, asd or bce",
    )
    cmp.add_argument("--out", type=Path, help="also write the comparison as JSON here")
    cmp.set_defaults(func=cmd_compare)

    m = sub.add_parser("model-info", help="parameter count and architecture of a preset")
    m.add_argument("--preset", default="small")
    m.add_argument("--in-channels", type=positive_int)
    m.add_argument("--out-channels", type=positive_int)
    m.set_defaults(func=cmd_model_info)

    xd = sub.add_parser("export-dataset", help="write a dataset folder as an nnU-Net v2 dataset")
    xd.add_argument("--data", type=Path, required=True, help="biounet dataset folder")
    xd.add_argument("--format", choices=["nnunet"], required=True)
    xd.add_argument("--out", type=Path, required=True, help="writes OUT/DatasetXXX_NAME/")
    xd.add_argument("--dataset-id", type=positive_int, default=1, help="1..999 (default 1)")
    xd.add_argument("--name", default="Dataset", help="dataset name (default Dataset)")
    xd.add_argument("--labels", type=csv_list, help="comma-separated labels (default: all)")
    xd.set_defaults(func=cmd_export_dataset)

    xi = sub.add_parser(
        "import-dataset",
        help="write an nnU-Net v2 dataset, or images with label-map masks, as a dataset folder",
    )
    xi.add_argument(
        "--data",
        type=Path,
        required=True,
        help="nnU-Net DatasetXXX_NAME folder, or (labelmap) a folder of images/ and masks/ "
        "holding one integer label map per image",
    )
    xi.add_argument("--format", choices=["nnunet", "labelmap"], required=True)
    xi.add_argument(
        "--out", type=Path, required=True, help="biounet dataset folder to write (new or empty)"
    )
    xi.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=V[,V...]",
        help="labelmap: a label and the label-map values it covers (repeat; e.g. --label "
        "disc=1,2 --label cup=2); default: every value but 0 a label class_<value>",
    )
    xi.set_defaults(func=cmd_import_dataset)

    en = sub.add_parser(
        "ensemble",
        help="bundle trained models (e.g. cross-validation folds) into one checkpoint that "
        "averages their probabilities",
    )
    en.add_argument("--out", type=Path, required=True, help="the ensemble file to write (new)")
    en.add_argument(
        "members",
        nargs="+",
        type=Path,
        help="checkpoints or run folders, all single models (best.pt) or all fundus pipelines "
        "(fundus.pt); a biounet cv folder stands for its folds' runs",
    )
    en.set_defaults(func=cmd_ensemble)

    d = sub.add_parser("demo", help="generate synthetic fundus data, train, evaluate, predict")
    d.add_argument("--out", type=Path, default=Path("demo_out"))
    d.add_argument(
        "--minutes", type=positive_float, default=3.0, help="training time budget (default 3)"
    )
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    # tifffile logs each defect of a corrupt file; the one error line we print names the file
    if not a.debug:
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        return a.func(a)
    except BiounetError as e:
        if a.debug:
            raise
        # one line whatever the message (a library's multi-line text included)
        print("biounet: error:", " ".join(str(e).split()), file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no: a full disk, a file where a folder must go
        if a.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"biounet: error: {where}{e.strerror or e} (--debug for the traceback)", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print("biounet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
