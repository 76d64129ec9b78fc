"""The two-dataset model's sampling weights, chosen on training images only: a fifth of each
training split is held out (Drishti-GS1: every 5th of its 50 training photographs, as fold 0 of
fundus_drishti.py's cross-validation; REFUGE: every 5th of its 400, within each diagnosis where
the labels give one: its training split has none), the recommended recipe (fundus_generalization.ADOPTED) is trained on the rest once per weight
pair, the same number of sampled images each, and both held-out sets are scored. Writes
benchmarks/results/fundus_generalization_weights.json and .md.

    python benchmarks/generalization_weights.py   # ~20 min per weight pair on 2 CPU cores

The rule, fixed before the runs: the REFUGE-heavier weights replace the equal ones when they lower
the REFUGE held-out vCDR error and cost the Drishti-GS1 held-out cup Dice at most 0.01 (the
fundus-generalisation issue's allowance). Data: ../shared/data/{drishti_gs1,refuge_canon512}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biounet.data.folder import read_splits  # noqa: E402
from common import RESULTS, SHARED_DATA, git_commit, machine, make_view, require  # noqa: E402
from fundus_generalization import (  # noqa: E402
    ADOPTED,
    LABELS,
    RUNS,
    evaluate_run,
    read_diagnosis,
    train_run,
)

# (Drishti-GS1, REFUGE) weights: each source's share of the sampled images is weight / sum
WEIGHTS = {"equal": (1.0, 1.0), "refuge_x3": (1.0, 3.0)}


def held_out(root: Path, diagnosis: dict[str, str], every: int = 5) -> list[str]:
    """Every ``every``-th training stem, within each diagnosis (all one group without labels)."""
    train = read_splits(root)["train"]
    groups: dict[str, list[str]] = {}
    for s in train:
        groups.setdefault(diagnosis.get(s, ""), []).append(s)
    return sorted(s for g in groups.values() for s in g[::every])


def views(roots: dict[str, Path], work: Path) -> dict[str, Path]:
    """Each dataset as a view: the held-in training images as 'train', the held-out as 'test'."""
    out = {}
    for name, root in roots.items():
        diagnosis = read_diagnosis(root / "meta" / "labels.csv")
        held = held_out(root, diagnosis)
        rest = [s for s in read_splits(root)["train"] if s not in held]
        out[name] = make_view(
            root, work / f"weights_view_{name}", {"train": rest, "test": held}, LABELS
        )
    return out


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Two-dataset sampling weights, chosen on held-out training images",
        "",
        # the arms' commit: generalization_thresholds.py's later update moves "commit" to its own
        f"commit `{result.get('commits', {}).get('arms', result['commit'])}`, {result['machine']}, "
        f"wall time {result['wall_time_s']:.0f} s",
        "",
        result["design"],
        "",
        "| weights (Drishti-GS1 : REFUGE) | REFUGE held-out disc / cup Dice | vCDR MAE "
        "| Drishti-GS1 held-out disc / cup Dice | vCDR MAE | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["arms"].items():
        rf, dr = r["refuge"], r["drishti"]
        w = ":".join(f"{x:g}" for x in r["weights"])
        lines.append(
            f"| {name} ({w}) | {rf['disc']['dice_mean']:.3f} / {rf['cup']['dice_mean']:.3f} | "
            f"{rf['vcdr_mae']:.4f} | {dr['disc']['dice_mean']:.3f} / "
            f"{dr['cup']['dice_mean']:.3f} | {dr['vcdr_mae']:.4f} | {r['train_s']:.0f} |"
        )
    lines += ["", f"Chosen: **{result['chosen']}** ({result['rule']})"]
    if "cup_threshold_sweep" in result:  # added by generalization_thresholds.py
        lines += threshold_markdown(result["cup_threshold_sweep"])
    path.write_text("\n".join(lines) + "\n")


def threshold_markdown(result: dict[str, Any]) -> list[str]:
    lines = ["", "## Cup threshold on the held-out training images (model weights_equal)", ""]
    lines += [result["note"], "", "| cup threshold | " + " | ".join(
        f"{n} cup Dice | {n} vCDR MAE" for n in result["tables"]) + " |"]  # fmt: skip
    lines.append("|---" * (1 + 2 * len(result["tables"])) + "|")
    for key in next(iter(result["tables"].values())):
        cells = [f"{result['tables'][n][key]['cup_dice_mean']:.4f} | "
                 f"{result['tables'][n][key]['vcdr_mae']:.4f}" for n in result["tables"]]  # fmt: skip
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drishti", type=Path, default=SHARED_DATA / "drishti_gs1")
    ap.add_argument("--refuge", type=Path, default=SHARED_DATA / "refuge_canon512")
    ap.add_argument("--work", type=Path, default=Path("/tmp/biounet_bench_generalization"))
    ap.add_argument("--locator-draws", type=int, default=1600, help="images sampled, locator")
    ap.add_argument("--roi-draws", type=int, default=4800, help="crops sampled, ROI model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = RESULTS
    if args.quick:  # results beside the runs, not in benchmarks/results
        args.locator_draws, args.roi_draws = 40, 40
        args.work = out = args.work.with_name(args.work.name + "_quick")
    t_start = time.perf_counter()
    roots = {"drishti": require(args.drishti), "refuge": require(args.refuge)}
    args.work.mkdir(parents=True, exist_ok=True)
    held_roots = views(roots, args.work)
    arms: dict[str, Any] = {}
    for name, weights in WEIGHTS.items():
        run = RUNS[ADOPTED]._replace(weights=weights)
        ck = train_run(f"weights_{name}", held_roots, args.work, args, run)
        arms[name] = {
            "weights": list(weights),
            "train_s": float((ck.parent / "train_seconds.txt").read_text()),
        }
        for test, root in held_roots.items():
            labels = root / "meta" / "labels.csv"
            arms[name][test] = evaluate_run(ck, test, root, args.work, labels)
    eq, heavy = arms["equal"], arms["refuge_x3"]
    rule = (
        "refuge_x3 when its REFUGE held-out vCDR MAE is lower and its Drishti-GS1 held-out cup "
        "Dice at most 0.01 below equal's; else equal"
    )
    wins = (
        heavy["refuge"]["vcdr_mae"] < eq["refuge"]["vcdr_mae"]
        and heavy["drishti"]["cup"]["dice_mean"] >= eq["drishti"]["cup"]["dice_mean"] - 0.01
    )
    result = {
        "commit": git_commit(),
        "machine": machine(),
        "wall_time_s": time.perf_counter() - t_start,
        "design": f"Recipe {ADOPTED} trained on 4/5 of each training split (Drishti-GS1 40, "
        "REFUGE 320: every 5th held out), the same sampled images per weight pair; scored on the "
        "held-out fifth (Drishti-GS1 10 photographs, REFUGE 80 images, no diagnosis labels in "
        "REFUGE's training split) with flips and ROI sizes; vCDR MAE against the experts' "
        "mean (Drishti-GS1) or the masks (REFUGE). No test image is used.",
        "arms": arms,
        "rule": rule,
        "chosen": "refuge_x3" if wins else "equal",
    }
    result["quick"] = args.quick
    (out / "fundus_generalization_weights.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out / "fundus_generalization_weights.md")
    print((out / "fundus_generalization_weights.md").read_text())


if __name__ == "__main__":
    main()
