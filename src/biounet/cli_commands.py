"""The ``biounet`` subcommands: each turns parsed arguments into a config and calls one function.
``biounet.cli`` builds the parser and dispatches here."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from biounet.config import DataConfig, RunConfig, TrainConfig, recipe
from biounet.errors import BiounetError

if TYPE_CHECKING:
    from biounet.predictor import PredictOptions

log = logging.getLogger("biounet")


def build_run_config(a: argparse.Namespace) -> RunConfig:
    """The one config of a training run, from the CLI arguments and the preset's recipe."""
    from biounet.models import preset

    if getattr(a, "tensorboard", False) and importlib.util.find_spec("tensorboard") is None:
        raise BiounetError(
            "--tensorboard: the tensorboard package is not installed (pip install tensorboard)"
        )
    r = recipe(a.preset)
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
        colour_augment=a.colour_augment,
        patch_size=a.patch_size or 0,
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
        compile=a.compile,
        adam_impl=a.adam,
        channels_last=not a.no_channels_last,
        activation_checkpointing=a.checkpointing,
        reuse_memory=a.reuse_memory,
    )
    return RunConfig(data=data, model=model, train=train, preset=a.preset)


def resume_config(a: argparse.Namespace) -> RunConfig:
    """The config of the run in ``a.resume`` (its config.yaml); only ``--epochs`` may change it."""
    from biounet.cli import parser

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


# train flags that concern the fundus pipeline's stages: refused by the plain pipeline and by cv
FUNDUS_ONLY = ("soft_targets", "polar", "polar_area_loss", "locator_grey")


def flag_names(dests: tuple[str, ...]) -> list[str]:
    return ["--" + d.replace("_", "-") for d in dests]


def cmd_train(a: argparse.Namespace) -> int:
    from biounet.dist import Dist, destroy_process_group, init_process_group
    from biounet.train import fit

    if a.pipeline == "fundus":
        if a.resume:
            raise BiounetError("--resume: not available with --pipeline fundus")
        if a.patch_size:
            raise BiounetError(
                "--patch-size: not with --pipeline fundus (its crop model trains on disc crops)"
            )
        if a.out is not None:
            refuse_existing_run(a.out, resumable=False)
        return train_fundus(a)
    if any(getattr(a, d) for d in FUNDUS_ONLY):
        raise BiounetError(
            f"{', '.join(flag_names(FUNDUS_ONLY))}: only with --pipeline fundus (they concern "
            "its stages)"
        )
    if a.resume:
        cfg, out = resume_config(a), a.resume
    elif a.data is None or a.out is None:
        raise BiounetError("train needs --data and --out (or --resume RUN_DIR)")
    else:
        refuse_existing_run(a.out)  # every rank, before the rendezvous: before rank 0 writes
        cfg, out = build_run_config(a), a.out
    # torchrun's variables are read here and nowhere else; the rest of biounet gets a Dist
    dist = Dist.from_env(os.environ)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    init_process_group(dist)
    finished = False
    try:
        out = fit(cfg, out, dist, resume=a.resume is not None)
        finished = True
    finally:
        destroy_process_group(dist, finished)
    if dist.is_main:
        print(
            f"run folder: {out} (best.pt, last.pt, metrics.csv, curves.png; report.html for one dataset folder)"
        )
    return 0


def refuse_existing_run(out: Path, resumable: bool = True) -> None:
    """``biounet.runlock.refuse_existing_run`` with the command line's ways out."""
    from biounet.runlock import refuse_existing_run as refuse

    resume = f"continue it with --resume {out}, or " if resumable else ""
    refuse(out, f"{resume}choose another --out or delete that folder first")


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
        colour_augment=a.colour_augment,
        grey=a.in_channels == 1,  # both stages on the luminance
        in_channels=a.in_channels or 0,  # 3: RGB, grey images repeated
        soft_targets=a.soft_targets,
        polar=a.polar,
        polar_area_loss=a.polar_area_loss,
        locator_grey=a.locator_grey,
    )
    path = fit_fundus(fc, a.out)
    print(f"fundus pipeline: {path} (locator/ and roi/ hold each stage's run)")
    return 0


def cmd_cv(a: argparse.Namespace) -> int:
    from biounet.cv import format_cv_summary, run_cv, summarize
    from biounet.dist import Dist

    if a.out is None or (a.data is None and not a.summarize):
        raise BiounetError("cv needs --out, and --data unless --summarize")
    if a.resume or a.pipeline != "plain" or any(getattr(a, d) for d in FUNDUS_ONLY):
        *rest, last = ["--resume", "--pipeline fundus", *flag_names(FUNDUS_ONLY)]
        raise BiounetError(
            f"cv: {', '.join(rest)} and {last} are not available (run the same cv command again: "
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


def predict_options(a: argparse.Namespace) -> PredictOptions:
    """predict's and evaluate's flags as ``PredictOptions`` (evaluate has no --input, --backend,
    --no-fast or --compile: their defaults)."""
    from biounet.predictor import PredictOptions, threshold_fields

    return PredictOptions(
        precision=a.precision,
        **threshold_fields(a.threshold),  # --threshold, else the checkpoint's saved ones
        tta=a.tta,
        postprocess=not a.no_postprocess,
        fit_ellipse=a.ellipse,
        input_kind=getattr(a, "input", "auto"),
        backend=getattr(a, "backend", "torch"),
        fast=not getattr(a, "no_fast", False),
        tta_scales=a.tta_scales,
        compile=getattr(a, "compile", False),
        reuse_memory=a.reuse_memory,
        tile=a.tile,
        tile_overlap=a.tile_overlap,
    )


def cmd_evaluate(a: argparse.Namespace) -> int:
    from biounet.evaluate import evaluate_checkpoint

    s = evaluate_checkpoint(
        a.checkpoint,
        a.data,
        a.split,
        a.out,
        predict_options(a),
        invert_masks=a.invert_masks or (),
        uncertainty=a.uncertainty,
    )
    print(format_summary(s))
    print(f"wrote {a.out}/per_image.csv, summary.json and report.html")
    return 0


def cmd_thresholds(a: argparse.Namespace) -> int:
    from biounet.thresholds import choose_thresholds, format_choice

    r = choose_thresholds(
        a.checkpoint,
        a.data,
        a.split,
        a.out,
        predict_options(a),
        invert_masks=a.invert_masks or (),
        save=a.save,
    )
    print(format_choice(r))
    print(f"wrote {a.out}/thresholds.json" + (f" and {a.save}" if a.save else ""))
    return 0


def format_summary(s: dict) -> str:
    from biounet.evaluate import threshold_text

    lines = [
        *([f"model: {s['model']}"] if "model" in s else []),  # summaries before it lack the key
        f"{s['n_images']} images, split {s['split']}, {threshold_text(s)} (per-image mean ± std)",
        f"{'label':<12}{'Dice':>16}{'IoU':>16}{'precision':>12}{'recall':>10}{'BCE':>8}",
    ]
    for lb, m in s["labels"].items():
        lines.append(
            f"{lb:<12}{m['dice_mean']:>9.4f} ±{m['dice_std']:.3f}{m['iou_mean']:>9.4f} ±{m['iou_std']:.3f}"
            f"{m['precision_mean']:>12.4f}{m['recall_mean']:>10.4f}{m['bce_mean']:>8.4f}"
        )
    if all("dice_ci95_low" in m for m in s["labels"].values()):
        lines.append(
            "Dice 95 % CI of the mean (bootstrap over the images): "
            + ", ".join(
                f"{lb} {m['dice_ci95_low']:.4f}-{m['dice_ci95_high']:.4f}"
                for lb, m in s["labels"].items()
            )
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
        predict_options(a),
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

    for path in export_checkpoint(a.checkpoint, a.out, a.format, overwrite=False):
        print(f"wrote {path}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    import json

    from biounet.compare import compare_evaluations, format_comparison

    c = compare_evaluations(a.a, a.b, a.metric)
    print(format_comparison(c))
    if a.out:
        a.out.write_text(json.dumps(c, indent=2))
        print(f"wrote {a.out}")
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
    from biounet.checkpoint import FORMAT, read_payload, save_model_ensemble
    from biounet.cv import fold_runs
    from biounet.fundus.pipeline import save_ensemble

    members = [m for p in a.members for m in fold_runs(p)]
    if read_payload(members[0])["format"] == FORMAT:
        out = save_model_ensemble(members, a.out)
        print(f"ensemble of {len(members)} models: {out}")
        return 0
    out = save_ensemble(members, a.out, overwrite=False)
    print(f"ensemble of {len(members)} fundus pipelines: {out}")
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
    if a.format == "labelmap":
        from biounet.data.labelmap import labelmap_to_folder, parse_label_specs

        labels = parse_label_specs(a.label) if a.label else None
        print(f"biounet dataset folder: {labelmap_to_folder(a.data, a.out, labels)}")
        return 0
    from biounet.data.nnunet import nnunet_to_folder

    if a.label:
        raise BiounetError("--label is for --format labelmap (nnU-Net's dataset.json names them)")
    print(f"biounet dataset folder: {nnunet_to_folder(a.data, a.out)}")
    return 0


def cmd_train_em(a: argparse.Namespace) -> int:
    from biounet.em.fit_em import EmFitConfig, fit_em
    from biounet.em.train_em import EmTrainConfig
    from biounet.infer import pick_device
    from biounet.models import preset
    from biounet.models.unet_valid import valid_input_size

    cfg = EmFitConfig(
        root=str(a.data),
        split=a.split,
        val_fraction=a.val_fraction,
        membrane_masks=a.membrane_masks,
        base_width=a.width,
        weight_map=not a.no_weight_map,
        train=EmTrainConfig(
            out_tile=a.out_tile,
            lr=a.lr,
            minutes=a.minutes,
            max_iters=a.max_iters,
            elastic=not a.no_elastic,
            seed=a.seed,
            precision=a.precision,
            device=a.device,
            reuse_memory=a.reuse_memory,
        ),
    )
    refuse_existing_run(a.out, resumable=False)
    pick_device(a.device)  # a device this machine lacks: said before the data is read
    try:  # a tile the unpadded network cannot produce: say so before anything is written
        valid_input_size(a.out_tile, preset("paper_valid_small").depth)
    except ValueError as e:
        raise BiounetError(f"--out-tile {a.out_tile}: {e}") from None
    s = fit_em(cfg, a.out)
    v = s["val"]
    print(
        f"{s['iterations']} iterations in {s['train_seconds']:.0f} s; validation slices "
        f"{', '.join(s['val_stems'])}: V-Rand (thinned) {v['v_rand_thinned']:.4f}, "
        f"V-Info (thinned) {v['v_info_thinned']:.4f} (membrane threshold "
        f"{s['membrane_threshold']:.2f}, test-time augmentation {'on' if s['tta'] else 'off'}); "
        f"pixel error {s['pixel_error_at_pixel_threshold']:.4f} at its own threshold "
        f"{s['pixel_error_threshold']:.2f} ({v['pixel_error']:.4f} at the V-Rand one); the "
        f"challenge's pixel error (1 - F1 of cell interior) "
        f"{s['pixel_error_fscore_at_its_threshold']:.4f} at {s['pixel_fscore_threshold']:.2f}"
    )
    print(f"checkpoint: {a.out / 'model.pt'} (biounet predict runs it by overlap-tile)")
    return 0
