"""Does each training speed option keep accuracy, and where should augmentation run?

    python benchmarks/speed_options.py                # every part (about 35 minutes on 2 cores)
    python benchmarks/speed_options.py --part accuracy --epochs 25
    python benchmarks/speed_options.py --part aug     # about 1 minute, synthetic data
    python benchmarks/speed_options.py --part compile # about 2 minutes
    python benchmarks/speed_options.py --part compile_infer  # about 2 minutes

accuracy: the small preset trained on Drishti-GS1's training split (20 % of it held out for
validation; the test split is not touched), once per arm, everything else equal: the fp32 reference
(NCHW, PyTorch's default per-parameter Adam), then each speed option alone (bf16 autocast,
channels-last, fused Adam), then all of them (biounet's default), also with a second seed to show
how far runs of the same recipe land apart (the reference and the default recipe five seeds each, and
the default recipe with PyTorch's own up-conv backward five). Reports the best epoch's validation Dice per
structure, its difference from the reference, and the median training seconds per epoch.

aug: the cost of biounet's vectorised augmentation (affine warp + photometric jitter on whole
batches) against a training step, and training throughput with augmentation inline vs in one
DataLoader worker process (on 2 cores a worker competes with the two compute threads).

compile: the small preset's training step with and without ``torch.compile``.

compile_infer: the small width's inference at 256 px, eager and compiled (``predict --compile``),
against MONAI's BasicUNet of the same widths.

inference: the fp32 reference's and the default arm's models, each predicting its validation
images in fp32 and in bf16: the difference bf16 prediction alone makes.

Writes benchmarks/results/speed_options.{json,md}; run folders go to --work (default
/tmp/biounet_bench_speed_options; a finished arm is reused on a rerun).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import (  # noqa: E402
    RESULTS,
    SHARED_DATA,
    git_commit,
    machine,
    md_header,
    require,
    write_json_md,
)

ARMS: dict[str, dict[str, Any]] = {
    "fp32 reference": {"precision": "fp32", "channels_last": False, "adam_impl": "loop"},
    "bf16 autocast": {"precision": "bf16", "channels_last": False, "adam_impl": "loop"},
    "channels-last": {"precision": "fp32", "channels_last": True, "adam_impl": "loop"},
    "fused Adam": {"precision": "fp32", "channels_last": False, "adam_impl": "fused"},
    "all (default)": {"precision": "bf16", "channels_last": True, "adam_impl": "fused"},
}
REFERENCE = ARMS["fp32 reference"]
DEFAULT = ARMS["all (default)"]
# more seeds of the two recipes that the bf16-vs-fp32 question compares
ARMS |= {f"all (default), seed {k}": {**DEFAULT, "seed": k} for k in (1, 2, 3, 4)}
ARMS |= {f"fp32 reference, seed {k}": {**REFERENCE, "seed": k} for k in (1, 2, 3, 4)}
# the default recipe with PyTorch's own backward for the 2x2 up-conv (biounet.models.upconv)
NATIVE_UPCONV = "all, PyTorch up-conv backward"
ARMS |= {
    NATIVE_UPCONV + (f", seed {k}" if k else ""): {**DEFAULT, "seed": k, "matrix_backward": False}
    for k in (0, 1, 2, 3, 4)
}
LABELS = ("disc", "cup")
DICE_KEYS = ("dice_disc", "dice_cup", "dice_mean")


def run_arm(name: str, train_kw: dict[str, Any], epochs: int, work: Path) -> dict[str, Any]:
    from biounet.config import RECIPES, DataConfig, RunConfig, TrainConfig
    from biounet.models import preset
    from biounet.models.upconv import UpConv2x2
    from biounet.train import fit

    out = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    metrics = out / "metrics.csv"
    if not (metrics.is_file() and len(read_rows(metrics)) == epochs):
        r = RECIPES["small"]
        cfg = RunConfig(
            data=DataConfig(
                root=str(require(SHARED_DATA / "drishti_gs1")),
                labels=LABELS,
                image_size=r["image_size"],
                val_fraction=0.2,
            ),
            model=preset("small", in_channels=3),
            train=TrainConfig(
                epochs=epochs,
                batch_size=r["batch_size"],
                lr=r["lr"],
                lr_step=0,
                lr_schedule="constant",
                **{k: v for k, v in train_kw.items() if k != "matrix_backward"},
            ),
            preset="small",
        )
        UpConv2x2.matrix_backward = train_kw.get("matrix_backward", True)
        try:
            fit(cfg, out)
        finally:
            UpConv2x2.matrix_backward = True
    rows = read_rows(metrics)
    best = max(rows, key=lambda x: float(x["val_dice_mean"]))
    return {
        "arm": name,
        "options": train_kw,
        "run": str(out),
        "best_epoch": int(best["epoch"]),
        **{f"dice_{lb}": float(best[f"val_dice_{lb}"]) for lb in LABELS},
        "dice_mean": float(best["val_dice_mean"]),
        "dice_mean_last5": statistics.mean(float(x["val_dice_mean"]) for x in rows[-5:]),
        "epoch_s_median": statistics.median(float(x["seconds"]) for x in rows),
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def accuracy_part(epochs: int, work: Path) -> list[dict[str, Any]]:
    rows = []
    for name, kw in ARMS.items():
        t0 = time.perf_counter()
        row = run_arm(name, kw, epochs, work)
        print(f"{name}: {fmt_row(row)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append(row)
    ref = rows[0]
    for row in rows:
        for k in ("dice_disc", "dice_cup", "dice_mean", "dice_mean_last5"):
            row[f"delta_{k}"] = row[k] - ref[k]
    return rows


def seed_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe (fp32 reference, all options) over its seeds: mean and sample sd of the best-epoch
    Dice; the difference of the means with its standard error."""
    out: dict[str, Any] = {}
    for recipe in ("fp32 reference", "all (default)", NATIVE_UPCONV):
        runs = [r for r in rows if r["arm"] == recipe or r["arm"].startswith(recipe + ", seed")]
        out[recipe] = {"n": len(runs)}
        if not runs:  # an older results file: no such arm
            continue
        for k in ("dice_disc", "dice_cup", "dice_mean"):
            v = [r[k] for r in runs]
            out[recipe][k] = statistics.mean(v)
            out[recipe][f"{k}_sd"] = statistics.stdev(v) if len(v) > 1 else float("nan")
    out["difference"] = difference(out["all (default)"], out["fp32 reference"])
    if out[NATIVE_UPCONV]["n"]:
        out["difference_upconv"] = difference(out["all (default)"], out[NATIVE_UPCONV])
    return out


def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float]]:
    """a's mean minus b's per Dice key, with the standard error of that difference."""
    return {
        k: {
            "mean": a[k] - b[k],
            "se": (a[f"{k}_sd"] ** 2 / a["n"] + b[f"{k}_sd"] ** 2 / b["n"]) ** 0.5,
        }
        for k in DICE_KEYS
    }


def inference_part(runs: dict[str, str]) -> list[dict[str, Any]]:
    """Each trained model (best.pt of ``runs``: arm -> run folder) evaluated on its own validation
    images twice, with fp32 and with bf16 inference (batch norm folded both times): the Dice
    difference that bf16 prediction alone makes, with the training held fixed."""
    from biounet.config import RunConfig
    from biounet.evaluate import evaluate_checkpoint
    from biounet.predictor import PredictOptions
    from biounet.train_data import split_samples

    out = []
    for arm, run in runs.items():
        cfg = RunConfig.load_yaml(Path(run) / "config.yaml")
        val_stems = [smp.stem for smp in split_samples(cfg)[1]]
        row: dict[str, Any] = {"arm": arm, "n_images": len(val_stems)}
        for precision in ("fp32", "bf16"):
            summary = evaluate_checkpoint(
                Path(run) / "best.pt",
                Path(cfg.data.root),
                "train",
                Path(run) / f"eval_{precision}",
                PredictOptions(precision=precision),
                stems=val_stems,
                report=False,
            )
            for lb in LABELS:
                row[f"{precision}_dice_{lb}"] = summary["labels"][lb]["dice_mean"]
        for lb in LABELS:
            row[f"delta_dice_{lb}"] = row[f"bf16_dice_{lb}"] - row[f"fp32_dice_{lb}"]
        print(f"inference {arm}: {row}", flush=True)
        out.append(row)
    return out


def fmt_row(r: dict[str, Any]) -> str:
    return (
        f"disc {r['dice_disc']:.4f} cup {r['dice_cup']:.4f} (best epoch {r['best_epoch']}), "
        f"{r['epoch_s_median']:.1f} s/epoch"
    )


def aug_part(steps: int = 30, batch: int = 8, size: int = 256) -> dict[str, Any]:
    """Augmentation cost and where to run it, on synthetic uint8 arrays of the training size."""
    import torch

    from biounet.config import ModelConfig
    from biounet.data.transforms import AugmentParams, augment_batch, normalize
    from biounet.infer import autocast, resolve_precision
    from biounet.losses import bce_dice_loss
    from biounet.models import build_model
    from biounet.optim import backward_step, grad_scaler, make_adam

    gen = torch.Generator().manual_seed(0)
    n = 64
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    masks = (torch.rand(n, 2, size, size, generator=gen) > 0.5).to(torch.uint8)
    p = AugmentParams()

    def batches(seed: int):
        g = torch.Generator().manual_seed(seed)
        while True:
            idx = torch.randint(0, n, (batch,), generator=g)
            yield augment_batch(images[idx], masks[idx], p, g)

    it = batches(1)
    for _ in range(3):
        next(it)
    aug_times = []
    for _ in range(20):
        t = time.perf_counter()
        next(it)
        aug_times.append(time.perf_counter() - t)

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    model = build_model(ModelConfig(in_channels=3, out_channels=2, base_width=16, depth=4))
    model = model.to(memory_format=torch.channels_last).train()
    opt = make_adam(model.parameters(), 1e-3)
    scaler = grad_scaler(precision, device)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        backward_step(bce_dice_loss(logits, y), opt, scaler)

    x0, y0 = next(it)
    for _ in range(2):
        step(x0, y0)
    step_times = []
    for _ in range(10):
        t = time.perf_counter()
        step(x0, y0)
        step_times.append(time.perf_counter() - t)

    def throughput(source) -> float:
        src = iter(source)
        step(*next(src))
        t = time.perf_counter()
        for _ in range(steps):
            step(*next(src))
        return steps * batch / (time.perf_counter() - t)

    inline = throughput(batches(2))
    loader = torch.utils.data.DataLoader(
        _Batches(images, masks, batch), batch_size=None, num_workers=1, prefetch_factor=2
    )
    worker = throughput(loader)
    return {
        "batch": batch,
        "size": size,
        "aug_ms_median": 1000 * statistics.median(aug_times),
        "train_step_ms_median": 1000 * statistics.median(step_times),
        "aug_share_of_step": statistics.median(aug_times) / statistics.median(step_times),
        "img_s_aug_inline": inline,
        "img_s_aug_in_worker": worker,
        "threads": torch.get_num_threads(),
    }


class _Batches(torch.utils.data.IterableDataset):
    """Augmented batches, endlessly, for the one-worker DataLoader arm."""

    def __init__(self, images: Any, masks: Any, batch: int) -> None:
        self.images, self.masks, self.batch = images, masks, batch

    def __iter__(self):
        from biounet.data.transforms import AugmentParams, augment_batch

        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(3)
        p = AugmentParams()
        while True:
            idx = torch.randint(0, len(self.images), (self.batch,), generator=g)
            yield augment_batch(self.images[idx], self.masks[idx], p, g)


def compile_part(batches: tuple[int, ...] = (1, 8)) -> list[dict[str, Any]]:
    """torch.compile's effect on the small preset's training step at 256 px (speed.py's worker,
    each configuration in its own process); wall seconds include the compilation."""
    from speed import run_worker

    rows = []
    for batch in batches:
        for compiled in (False, True):
            spec = {"task": "train", "impl": "biounet", "base": 16, "size": 256, "batch": batch}
            spec |= {"reps": 15, "warmup": 3, "cap_s": 200.0, "compile": compiled}
            t0 = time.perf_counter()
            r = run_worker(spec, 1200.0)
            row = {"batch": batch, "compile": compiled, "wall_s": time.perf_counter() - t0}
            rows.append(row | {"img_s": r.get("img_s"), "error": r.get("error")})
            print(f"compile={compiled} batch {batch}: {r.get('img_s')} img/s", flush=True)
    return rows


def compile_infer_part(batches: tuple[int, ...] = (1, 4)) -> list[dict[str, Any]]:
    """Inference of the small width at 256 px: biounet eager, biounet under torch.compile (with
    freezing, as ``predict --compile`` runs it) and MONAI's BasicUNet of the same widths, each in
    its own process (speed.py's worker), in turn within one run: img/s and the ratio to MONAI."""
    from speed import run_worker

    rows = []
    for batch in batches:
        got = {}
        for arm, impl, compiled in (
            ("monai", "monai", False),
            ("biounet", "biounet", False),
            ("biounet + compile", "biounet", True),
        ):
            spec = {"task": "infer", "impl": impl, "base": 16, "size": 256, "batch": batch}
            spec |= {"reps": 20, "warmup": 3, "cap_s": 200.0, "compile": compiled}
            t0 = time.perf_counter()
            r = run_worker(spec, 1200.0)
            got[arm] = r.get("img_s")
            rows.append(
                {"batch": batch, "arm": arm, "img_s": r.get("img_s"), "error": r.get("error")}
                | {"wall_s": time.perf_counter() - t0}
            )
            print(f"{arm} batch {batch}: {r.get('img_s')} img/s", flush=True)
        for row in rows[-3:]:
            ok = row["img_s"] and got["monai"]
            row["vs_monai"] = row["img_s"] / got["monai"] if ok else None
    return rows


def markdown(data: dict[str, Any], results_dir: Path = RESULTS) -> str:
    """The page of ``data``; the fundus bf16/fp32 table is read from ``results_dir``."""
    title = "Speed options: accuracy kept? where does augmentation run?"
    out = md_header(title, data, "speed_options.py")
    if "accuracy" in data:
        acc = data["accuracy"]
        out += [
            "",
            f"## Validation Dice per speed option ({acc['epochs']} epochs, small preset, "
            "Drishti-GS1 training split, 20 % held out)",
            "",
            "Best epoch's validation Dice (Δ: minus the fp32 reference's); 'last 5': the mean "
            "Dice of the last five epochs, less noisy than a maximum.",
            "",
            "| arm | precision | channels-last | Adam | disc | cup | mean | Δ disc | Δ cup | "
            "Δ mean | last 5 | Δ last 5 | best epoch | s/epoch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in acc["rows"]:
            o = r["options"]
            out.append(
                f"| {r['arm']} | {o['precision']} | {'yes' if o['channels_last'] else 'no'} | "
                f"{o['adam_impl']} | {r['dice_disc']:.4f} | {r['dice_cup']:.4f} | "
                f"{r['dice_mean']:.4f} | {r['delta_dice_disc']:+.4f} | "
                f"{r['delta_dice_cup']:+.4f} | {r['delta_dice_mean']:+.4f} | "
                f"{r.get('dice_mean_last5', float('nan')):.4f} | "
                f"{r.get('delta_dice_mean_last5', float('nan')):+.4f} | {r['best_epoch']} | "
                f"{r['epoch_s_median']:.1f} |"
            )
    seeds = data.get("accuracy", {}).get("seeds")
    if seeds:
        a, b = seeds["all (default)"], seeds["fp32 reference"]
        out += [
            "",
            f"Over seeds (all options: {a['n']} runs, fp32 reference: {b['n']} runs), "
            "best-epoch Dice mean ± sd:",
            "",
            "| recipe | disc | cup | mean |",
            "| --- | --- | --- | --- |",
        ]
        for name, r in (("all options (bf16)", a), ("fp32 reference", b)):
            out.append(
                f"| {name} | "
                + " | ".join(f"{r[k]:.4f} ± {r[k + '_sd']:.4f}" for k in DICE_KEYS)
                + " |"
            )
        d = seeds["difference"]
        out.append(
            "| difference (± standard error) | "
            + " | ".join(f"{d[k]['mean']:+.4f} ± {d[k]['se']:.4f}" for k in DICE_KEYS)
            + " |"
        )
        if "difference_upconv" in seeds:
            n, d = seeds[NATIVE_UPCONV], seeds["difference_upconv"]
            out.append(
                "| all options with PyTorch's up-conv backward | "
                + " | ".join(f"{n[k]:.4f} ± {n[k + '_sd']:.4f}" for k in DICE_KEYS)
                + " |"
            )
            out.append(
                "| all options minus that (± standard error): the matrix up-conv backward | "
                + " | ".join(f"{d[k]['mean']:+.4f} ± {d[k]['se']:.4f}" for k in DICE_KEYS)
                + " |"
            )
    if "inference" in data:
        out += [
            "",
            "## bf16 vs fp32 prediction, same trained model (validation images, mean Dice)",
            "",
            "| trained as | images | fp32 disc | bf16 disc | Δ disc | fp32 cup | bf16 cup | Δ cup |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        out += [
            f"| {r['arm']} | {r['n_images']} | {r['fp32_dice_disc']:.4f} | "
            f"{r['bf16_dice_disc']:.4f} | {r['delta_dice_disc']:+.4f} | "
            f"{r['fp32_dice_cup']:.4f} | {r['bf16_dice_cup']:.4f} | {r['delta_dice_cup']:+.4f} |"
            for r in data["inference"]
        ]
    if "aug" in data:
        a = data["aug"]
        out += [
            "",
            f"## Augmentation (batch {a['batch']}, {a['size']} px, small preset training step, "
            f"{a['threads']} threads)",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| augmentation of one batch (median) | {a['aug_ms_median']:.1f} ms |",
            f"| training step (median) | {a['train_step_ms_median']:.1f} ms |",
            f"| augmentation / step | {a['aug_share_of_step']:.1%} |",
            f"| training img/s, augmentation inline | {a['img_s_aug_inline']:.2f} |",
            f"| training img/s, augmentation in 1 worker process | {a['img_s_aug_in_worker']:.2f} |",
        ]
    if "compile" in data:
        out += [
            "",
            "## torch.compile (small preset, 256 px, training step)",
            "",
            "Process wall seconds include compiling; with a warm compile cache (a rerun) that is "
            "a few seconds, the first compilation of a model took about 30 s here.",
            "",
            "| batch | compile | img/s | process wall s (incl. compilation) |",
            "| --- | --- | --- | --- |",
        ]
        out += [
            f"| {r['batch']} | {'yes' if r['compile'] else 'no'} | "
            + (f"{r['img_s']:.2f}" if r["img_s"] else f"error: {r['error']}")
            + f" | {r['wall_s']:.0f} |"
            for r in data["compile"]
        ]
    if "compile_infer" in data:
        out += [
            "",
            "## torch.compile for inference (small width, 256 px; `predict --compile`)",
            "",
            "biounet's inference path (batch norm folded, channels-last, bf16), eager and under "
            "torch.compile with freezing (weights folded in as constants, prepacked for oneDNN), "
            "against MONAI's BasicUNet of the same widths (eager fp32, as its users run it); each "
            "in its own process, measured in turn in one run. Process wall seconds include the "
            "compilation.",
            "",
            "| batch | model | img/s | vs MONAI | process wall s |",
            "| --- | --- | --- | --- | --- |",
        ]
        out += [
            f"| {r['batch']} | {r['arm']} | "
            + (f"{r['img_s']:.2f}" if r["img_s"] else f"error: {r['error']}")
            + f" | {'-' if r.get('vs_monai') is None else format(r['vs_monai'], '.2f')} | "
            + f"{r['wall_s']:.0f} |"
            for r in data["compile_infer"]
        ]
    return "\n".join(out + fundus_precision_lines(results_dir / "fundus_drishti.json")) + "\n"


def fundus_precision_lines(path: Path) -> list[str]:
    """The table of bf16 against fp32 training on the fundus pipeline's cross-validation
    (``fundus_drishti.py --stage ablate --ablate fp32``), where that results file has it."""
    r = json.loads(path.read_text()).get("cv_ablation_fp32") if path.is_file() else None
    if not r:
        return []
    bf16, fp32 = r["base"], r["fp32"]
    keys = ("disc_dice_mean", "cup_dice_mean", "vcdr_mae")
    out = [
        "",
        "## bf16 vs fp32 training, fundus pipeline cross-validation (`fundus_drishti.py --stage "
        "ablate --ablate fp32`)",
        "",
        f"The adopted fundus recipe trained with bf16 autocast (the default) and in fp32 on the "
        f"same {r['folds_evaluated']} folds ({r['images_evaluated']} held-out Drishti-GS1 "
        "training images), both scored by the same code (from fundus_drishti.json).",
        "",
        "| training | disc Dice | cup Dice | vCDR MAE |",
        "| --- | --- | --- | --- |",
        "| bf16 (default) | " + " | ".join(f"{bf16[k]:.4f}" for k in keys) + " |",
        "| fp32 | " + " | ".join(f"{fp32[k]:.4f}" for k in keys) + " |",
        "| bf16 minus fp32 | " + " | ".join(f"{bf16[k] - fp32[k]:+.4f}" for k in keys) + " |",
    ]
    folds = r.get("per_fold", {})
    if "base" in folds:
        out += [
            "",
            "Per fold, bf16 minus fp32: "
            + "; ".join(
                f"disc {b['disc_dice_mean'] - f['disc_dice_mean']:+.4f}, "
                f"cup {b['cup_dice_mean'] - f['cup_dice_mean']:+.4f}"
                for b, f in zip(folds["base"], folds["fp32"], strict=True)
            ),
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--part",
        choices=["all", "accuracy", "aug", "compile", "compile_infer", "inference", "report"],
        default="all",
    )
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_speed_options"))
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    path = a.results_dir / "speed_options.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if a.part in ("all", "aug"):
        data["aug"] = aug_part()
        print(json.dumps(data["aug"], indent=1), flush=True)
    if a.part in ("all", "compile"):
        data["compile"] = compile_part()
    if a.part in ("all", "compile_infer"):
        data["compile_infer"] = compile_infer_part()
    if a.part in ("all", "accuracy"):
        rows = accuracy_part(a.epochs, a.work)
        data["accuracy"] = {"epochs": a.epochs, "rows": rows, "seeds": seed_summary(rows)}
    if a.part in ("all", "inference"):
        runs = {r["arm"]: r["run"] for r in data["accuracy"]["rows"]}
        data["inference"] = inference_part(
            {k: runs[k] for k in ("fp32 reference", "all (default)")}
        )
    if a.part == "report":  # the markdown again from the results as they are
        path.with_suffix(".md").write_text(markdown(data, a.results_dir))
        print(f"wrote {path.with_suffix('.md')}")
        return 0
    data.update(commit=git_commit(), machine=machine())
    print(f"wrote {path} and {write_json_md(path, data, markdown(data, a.results_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
