"""The ``biounet`` command: parses arguments, builds a config, calls one function per subcommand."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from biounet import __version__
from biounet.config import DataConfig, RunConfig, TrainConfig
from biounet.errors import BiounetError

log = logging.getLogger("biounet")

# Per-preset training defaults. The article's recipe for "seed": Adam 1e-4, StepLR(10, 0.1), 50 epochs, 224 px.
RECIPES: dict[str, dict] = {
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


def csv_list(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def build_run_config(a: argparse.Namespace) -> RunConfig:
    """The one config of a training run, from the CLI arguments and the preset's recipe."""
    from biounet.models import preset

    if getattr(a, "tensorboard", False) and importlib.util.find_spec("tensorboard") is None:
        raise BiounetError(
            "--tensorboard: the tensorboard package is not installed (pip install tensorboard)"
        )
    r = RECIPES.get(a.preset, RECIPES["small"])
    model = preset(a.preset, in_channels=a.in_channels or 0)
    pick = lambda v, key: r[key] if v is None else v  # noqa: E731
    data = DataConfig(
        root=str(a.data),
        labels=a.labels or (),
        image_size=pick(a.image_size, "image_size"),
        invert_masks=a.invert_masks or (),
        val_fraction=a.val_fraction,
        augment=not a.no_augment,
        camera_augment=a.camera_augment,
    )
    train = TrainConfig(
        epochs=pick(a.epochs, "epochs"),
        batch_size=pick(a.batch_size, "batch_size"),
        lr=pick(a.lr, "lr"),
        lr_step=r.get("lr_step", 0),
        lr_gamma=r.get("lr_gamma", 0.1),
        lr_schedule=a.lr_schedule or ("step" if r.get("lr_step", 0) else "constant"),
        seed=a.seed,
        precision=a.precision,
        max_minutes=a.max_minutes or 0.0,
        deterministic=a.deterministic,
        tensorboard=a.tensorboard,
        sync_bn=a.sync_bn,
    )
    return RunConfig(data=data, model=model, train=train, preset=a.preset)


def resume_config(a: argparse.Namespace) -> RunConfig:
    """The config of the run in ``a.resume`` (its config.yaml); only ``--epochs`` may change it."""
    defaults = vars(parser().parse_args(["train", "--resume", str(a.resume)]))
    given = [
        "--" + k.replace("_", "-")
        for k, v in vars(a).items()
        if k not in ("epochs", "debug", "quiet") and v != defaults.get(k)
    ]
    if given:
        raise BiounetError(
            f"--resume continues {a.resume} as its config.yaml says; drop {', '.join(given)} "
            "(only --epochs may change)"
        )
    path = a.resume / "config.yaml"
    if not path.is_file():
        raise BiounetError(
            f"{path}: not found; --resume takes a run folder written by biounet train"
        )
    cfg = RunConfig.load_yaml(path)
    if a.epochs:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=a.epochs))
    return cfg


def cmd_train(a: argparse.Namespace) -> int:
    from biounet.dist import Dist, destroy_process_group, init_process_group
    from biounet.train import fit

    if a.pipeline == "fundus":
        if a.resume:
            raise BiounetError("--resume: not available with --pipeline fundus")
        return train_fundus(a)
    if a.resume:
        cfg, out = resume_config(a), a.resume
    elif a.data is None or a.out is None:
        raise BiounetError("train needs --data and --out (or --resume RUN_DIR)")
    else:
        cfg, out = build_run_config(a), a.out
    # torchrun's variables are read here and nowhere else; the rest of biounet gets a Dist
    dist = Dist.from_env(os.environ)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    init_process_group(dist)
    try:
        out = fit(cfg, out, dist, resume=a.resume is not None)
    finally:
        destroy_process_group(dist)
    if dist.is_main:
        print(f"run folder: {out} (best.pt, last.pt, metrics.csv, curves.png, report.html, ...)")
    return 0


def train_fundus(a: argparse.Namespace) -> int:
    from biounet.fundus.pipeline import FundusConfig, fit_fundus

    fc = FundusConfig(
        data_root=str(a.data),
        labels=a.labels or ("disc", "cup"),
        roi_size=a.image_size or 256,
        roi_epochs=a.epochs or FundusConfig.roi_epochs,
        locator_epochs=a.locator_epochs,
        roi_preset=a.preset,
        batch_size=a.batch_size or 8,
        lr=a.lr or 2e-3,
        seed=a.seed,
        val_fraction=a.val_fraction,
        precision=a.precision,
        roi_scale=a.roi_scale,
        roi_minutes=a.max_minutes or 0.0,
        camera_augment=a.camera_augment,
    )
    path = fit_fundus(fc, a.out)
    print(f"fundus pipeline: {path} (locator/ and roi/ hold each stage's run)")
    return 0


def cmd_cv(a: argparse.Namespace) -> int:
    from biounet.cv import format_cv_summary, run_cv, summarize
    from biounet.dist import Dist

    if a.out is None or (a.data is None and not a.summarize):
        raise BiounetError("cv needs --out, and --data unless --summarize")
    if a.resume or a.pipeline != "plain":
        raise BiounetError(
            "cv: --resume and --pipeline fundus are not available (run the same cv command again: "
            "done folds are skipped and an interrupted one resumes)"
        )
    if a.summarize and a.fold is not None:
        raise BiounetError("cv: --summarize and --fold exclude each other")
    if Dist.from_env(os.environ).enabled:
        raise BiounetError("cv: start folds as separate processes (--fold K), not under torchrun")
    s = summarize(a.out) if a.summarize else run_cv(build_run_config(a), a.out, a.folds, a.fold)
    if s is None:
        print(f"fold {a.fold} done: {a.out}/fold_{a.fold}; cv_summary.json follows with every fold")
        return 0
    print(format_cv_summary(s))
    print(f"wrote {a.out}/cv_summary.json")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from biounet.evaluate import evaluate_checkpoint

    s = evaluate_checkpoint(
        a.checkpoint,
        a.data,
        a.split,
        a.out,
        a.threshold,
        a.precision,
        invert_masks=a.invert_masks or (),
        tta=a.tta,
        postprocess=not a.no_postprocess,
        fit_ellipse=a.ellipse,
        uncertainty=a.uncertainty,
    )
    print(format_summary(s))
    print(f"wrote {a.out}/per_image.csv, summary.json and report.html")
    return 0


def format_summary(s: dict) -> str:
    lines = [
        f"{s['n_images']} images, split {s['split']}, threshold {s['threshold']} (per-image mean ± std)",
        f"{'label':<12}{'Dice':>16}{'IoU':>16}{'precision':>12}{'recall':>10}{'BCE':>8}",
    ]
    for lb, m in s["labels"].items():
        lines.append(
            f"{lb:<12}{m['dice_mean']:>9.4f} ±{m['dice_std']:.3f}{m['iou_mean']:>9.4f} ±{m['iou_std']:.3f}"
            f"{m['precision_mean']:>12.4f}{m['recall_mean']:>10.4f}{m['bce_mean']:>8.4f}"
        )
    if all("ece" in m for m in s["labels"].values()):
        lines.append(
            "calibration error (ECE, pixels pooled): "
            + ", ".join(f"{lb} {m['ece']:.4f}" for lb, m in s["labels"].items())
        )
    if "uncertainty" in s:
        u = s["uncertainty"]
        lines.append(
            f"uncertainty score, AUROC for Dice < {u['dice_below']}: "
            + ", ".join(
                f"{k} {'-' if v['auroc'] is None else format(v['auroc'], '.3f')} ({v['n_below']} below)"
                for k, v in u.items()
                if isinstance(v, dict)
            )
        )
    if "vcdr" in s:
        v = s["vcdr"]
        lines.append(
            "vCDR mean abs. error: "
            + ", ".join(f"{k[4:]} {val:.4f}" for k, val in v.items() if k.startswith("mae_"))
        )
    am = s["article_metrics"]
    lines.append(
        f"article's pooled numbers: BCE {am['bce']:.4f}, 'dice' (1 - soft Dice) {am['dice_loss_pooled']:.4f}, "
        f"IoU {am['iou_pooled']:.4f}"
    )
    return "\n".join(lines)


def cmd_predict(a: argparse.Namespace) -> int:
    from biounet.predict import predict_paths

    done, skipped, errors = predict_paths(
        a.checkpoint,
        a.inputs,
        a.out,
        a.threshold,
        a.precision,
        tta=a.tta,
        postprocess=not a.no_postprocess,
        fit_ellipse=a.ellipse,
        input_kind=a.input,
        backend=a.backend,
        fast=not a.no_fast,
        uncertainty=a.uncertainty,
        overwrite=a.overwrite,
        show_progress=not a.quiet,
    )
    kept = f", {len(skipped)} skipped (outputs exist; --overwrite redoes them)" if skipped else ""
    print(f"{len(done)} image(s) written to {a.out}{kept}")
    for e in errors:
        print(f"biounet: skipped: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_export(a: argparse.Namespace) -> int:
    from biounet.export import export_checkpoint

    for path in export_checkpoint(a.checkpoint, a.out, a.format):
        print(f"wrote {path}")
    return 0


def cmd_model_info(a: argparse.Namespace) -> int:
    from biounet.models import build_model, count_parameters, preset

    cfg = preset(a.preset, in_channels=a.in_channels, out_channels=a.out_channels)
    model = build_model(cfg)
    print(f"preset {a.preset}: {json.dumps(dataclasses.asdict(cfg))}")
    print(model)
    print(f"trainable parameters: {count_parameters(model):,}")
    return 0


def cmd_ensemble(a: argparse.Namespace) -> int:
    from biounet.fundus.pipeline import save_ensemble

    out = save_ensemble(a.members, a.out)
    print(f"ensemble of {len(a.members)} fundus pipelines: {out}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from biounet.demo import run_demo

    run_demo(Path(a.out), minutes=a.minutes, seed=a.seed)
    return 0


def cmd_export_dataset(a: argparse.Namespace) -> int:
    from biounet.data.nnunet import folder_to_nnunet

    path = folder_to_nnunet(a.data, a.out, a.dataset_id, a.name, a.labels or ())
    print(f"nnU-Net v2 raw dataset: {path}")
    return 0


def cmd_import_dataset(a: argparse.Namespace) -> int:
    from biounet.data.nnunet import nnunet_to_folder

    print(f"biounet dataset folder: {nnunet_to_folder(a.data, a.out)}")
    return 0


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (default 0.5)"
    )
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: mean over flips (fundus pipeline)",
    )
    p.add_argument(
        "--no-postprocess",
        action="store_true",
        help="fundus: keep raw masks (default: one component each, holes filled, cup inside disc)",
    )
    p.add_argument(
        "--ellipse", action="store_true", help="fundus: replace disc and cup by fitted ellipses"
    )


class Parser(argparse.ArgumentParser):
    """argparse with biounet's one-line error format (usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"biounet: error: {message} (see {self.prog} --help)\n")


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
        help="network input channels: 1 (grey) or 3 (RGB) (default: from the images)",
    )
    t.add_argument("--epochs", type=positive_int)
    t.add_argument("--batch-size", type=positive_int)
    t.add_argument("--image-size", type=positive_int, help="side of the square the network sees")
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
        "--pipeline",
        choices=["plain", "fundus"],
        default="plain",
        help="fundus: disc locator + disc-centred crop model, one fundus.pt (see README)",
    )
    t.add_argument(
        "--locator-epochs", type=positive_int, default=40, help="fundus: epochs of the disc locator"
    )
    t.add_argument(
        "--roi-scale",
        type=positive_float,
        default=2.0,
        help="fundus: crop side relative to the located disc's extent",
    )
    t.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
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
    c.add_argument("--folds", type=positive_int, help="number of folds (default 5)")
    c.add_argument("--fold", type=int, metavar="K", help="run only fold K (0..folds-1)")
    c.add_argument("--summarize", action="store_true", help="only write OUT/cv_summary.json")
    c.set_defaults(func=cmd_cv)

    e = sub.add_parser("evaluate", help="per-image metrics of a checkpoint on a dataset split")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument(
        "--split",
        default=None,
        help="split in splits.json (default: test, or all without splits.json)",
    )
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--invert-masks", type=csv_list, help="default: as in training")
    e.add_argument(
        "--uncertainty",
        action="store_true",
        help="also each image's uncertainty score (as predict --uncertainty) and its AUROC for "
        "finding the images with Dice below 0.8",
    )
    add_common(e)
    e.set_defaults(func=cmd_evaluate)

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

    xi = sub.add_parser("import-dataset", help="write an nnU-Net v2 dataset as a dataset folder")
    xi.add_argument("--data", type=Path, required=True, help="nnU-Net DatasetXXX_NAME folder")
    xi.add_argument("--format", choices=["nnunet"], required=True)
    xi.add_argument("--out", type=Path, required=True, help="biounet dataset folder to write")
    xi.set_defaults(func=cmd_import_dataset)

    en = sub.add_parser(
        "ensemble", help="bundle fundus pipelines (e.g. cross-validation folds) into one"
    )
    en.add_argument("--out", type=Path, required=True)
    en.add_argument("members", nargs="+", type=Path, help="fundus.pt files")
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
