"""Markdown tables for benchmarks/fundus_generalization.py's JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = [
    ("disc Dice", lambda r: r["disc"]["dice_mean"]),
    ("cup Dice", lambda r: r["cup"]["dice_mean"]),
    ("vCDR MAE", lambda r: r["vcdr_mae"]),
    ("bias normal", lambda r: r.get("vcdr_bias_normal")),
    ("bias glaucoma", lambda r: r.get("vcdr_bias_glaucoma")),
    ("vCDR AUC", lambda r: r.get("vcdr_auc")),
    ("spec @0.6", lambda r: r.get("spec_at_vcdr06")),
    ("sens @0.6", lambda r: r.get("sens_at_vcdr06")),
    ("flagged", lambda r: r.get("flagged_doubtful")),
]


def crops_model(result: dict[str, Any]) -> str:
    """The run the crop table used (older results: the one chosen by validation Dice)."""
    chosen = (result.get("both_chosen_by_validation") or {}).get("run", "both")
    return result.get("crops_model") or chosen


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Fundus models across datasets (Drishti-GS1, REFUGE Canon 512)",
        "",
        f"commit `{result['commit']}`, {result['machine']}, wall time {result['wall_time_s']:.0f} s"
        + (" (--quick: tiny budgets, numbers meaningless)" if result.get("quick") else ""),
        "",
        *(
            [f"Runs trained and scored at other commits: {older}.", ""]
            if (
                older := ", ".join(
                    f"{k} `{c}`"
                    for k, c in result.get("run_commits", {}).items()
                    if c != result["commit"]
                )
            )
            else []
        ),
        "Train -> test. Per-image means; vCDR MAE against the experts' mean (Drishti-GS1) or the "
        "ground-truth masks (REFUGE); bias = predicted - true vCDR; spec/sens for the rule "
        "'vCDR >= 0.6 means refer' (REFUGE test labels; Drishti-GS1 has none here).",
        "",
        "Flips averaged (TTA) in every run; 'ROI sizes': the ROI side factors averaged too "
        "(fundus.pipeline.TTA_SCALES, chosen by the Drishti-GS1 cross-validation; rows scored "
        "before it read at 1 only).",
        "",
        "| run | images | ROI sizes | " + " | ".join(c for c, _ in COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, r in result["runs"].items():
        cells = [fmt(f(r)) for _, f in COLUMNS]
        sizes = ", ".join(f"{s:g}" for s in r.get("tta_scales", [1.0]))
        lines.append(f"| {name} | {r['n_images']} | {sizes} | " + " | ".join(cells) + " |")
    ref = next((r for r in result["runs"].values() if r.get("truth_vcdr_auc") is not None), None)
    if ref:
        lines += [
            "",
            f"Reference, the ground-truth masks' own vCDR on REFUGE test: AUC "
            f"{fmt(ref['truth_vcdr_auc'])}, spec {fmt(ref['truth_spec_at_vcdr06'])}, sens "
            f"{fmt(ref['truth_sens_at_vcdr06'])} at vCDR >= 0.6.",
        ]
    flagged = [
        f"{name} {fmt(f['flagged']['cup_dice_mean'])} / {fmt(f['flagged']['vcdr_abs_err_mean'])} "
        f"(n={f['flagged']['n']}) vs {fmt(f['unflagged']['cup_dice_mean'])} / "
        f"{fmt(f['unflagged']['vcdr_abs_err_mean'])}"
        for name, r in result["runs"].items()
        if (f := r.get("doubt_flags")) and f["flagged"]["n"]
    ]
    lines += [
        "",
        "Doubt flags (predict's DOUBTFUL): cup Dice / |vCDR error| of flagged vs unflagged images: "
        + ("; ".join(flagged) or "no image flagged"),
    ]
    lines += [
        "",
        "Training time (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["train_time_s"].items()),
    ]
    lines += site_lines(result.get("site_thresholds") or {})
    lines += holdout_lines(result.get("holdout_thresholds") or {})
    if result.get("crops_refuge_test"):
        lines += [
            "",
            f"## Disc-centred crops (model '{crops_model(result)}', "
            "input kind detected automatically)",
            "",
            "| disc share of crop area | images | recognised as crop | flagged doubtful | disc Dice "
            "| cup Dice |",
            "|---|---|---|---|---|---|",
        ]
        for k, c in result["crops_refuge_test"].items():
            flagged = c.get("flagged")
            f = "-" if flagged is None else _flag_counts(flagged)
            lines.append(
                f"| {k.split('_')[-1]} | {c['n_images']} | {c['recognised_as_crop']} | {f} | "
                f"{c['disc_dice_mean']:.3f} | {c['cup_dice_mean']:.3f} |"
            )
        if result.get("crops_commit"):
            lines += ["", f"Crops scored at commit `{result['crops_commit'][:12]}`."]
    path.write_text("\n".join(lines) + "\n")


def holdout_lines(h: dict[str, Any]) -> list[str]:
    """The two-dataset model holding out a fifth of each training split, each test set scored at
    0.5 and at the thresholds its site's held-out images chose (--holdout-thresholds)."""
    if not h:
        return []
    out = [
        "",
        f"## Site thresholds from held-out training images (`--holdout-thresholds`, run "
        f"`{h['run']}`, commit `{h['commit'][:12]}`, trained in {h['train_time_s']:.0f} s)",
        "",
        "The adopted two-dataset recipe with a fifth of each training split held out (they choose "
        "the crop model's best epoch); each dataset's disc and cup thresholds chosen by "
        "`biounet choose-thresholds` on its own held-out training images; each test set scored "
        "once at 0.5 and once at its thresholds.",
        "",
        "| test set | held out | disc / cup threshold | cut | disc Dice | cup Dice | vCDR MAE | "
        "bias normal | vCDR AUC | spec / sens @0.6 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for test in ("refuge", "drishti"):
        if test not in h:
            continue
        d, t = h[test], h[test]["thresholds"]
        for key, cut in (("test_at_0.5", "0.5"), ("test_at_thresholds", "chosen")):
            r = d[key]
            ss = f"{fmt(r.get('spec_at_vcdr06'))} / {fmt(r.get('sens_at_vcdr06'))}"
            out.append(
                f"| {test} | {d['held_out_images']} | {t.get('disc', 0.5):g} / "
                f"{t.get('cup', 0.5):g} | {cut} | {fmt(r['disc']['dice_mean'])} | "
                f"{fmt(r['cup']['dice_mean'])} | {fmt(r['vcdr_mae'])} | "
                f"{fmt(r.get('vcdr_bias_normal'))} | {fmt(r.get('vcdr_auc'))} | {ss} |"
            )
    return out


def site_lines(site: dict[str, Any]) -> list[str]:
    """The table of models scored on a dataset they never saw, with thresholds chosen on a few
    of its labelled training images (fundus_generalization.py --site-thresholds)."""
    if not site:
        return []
    out = [
        "",
        "## Thresholds chosen on a few labelled images of the new site (`--site-thresholds`)",
        "",
        "A model on a dataset it never saw (its new site); its disc and cup thresholds chosen by "
        "`biounet choose-thresholds` (mean Dice, disc first, then the cup with the disc at it) "
        "on the first n of the site's *training* images; then the site's test set scored once "
        "with them (same TTA, ROI sizes, ellipses as above). The weights are the run's own: only "
        "the two cuts use the site's labels.",
        "",
        "| run -> site | n labelled | disc / cup threshold | calibration disc / cup Dice at 0.5 "
        "-> chosen | test disc Dice | test cup Dice | test vCDR MAE | bias normal | vCDR AUC | "
        "spec / sens @0.6 | flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in site.values():
        t, c, r = s["thresholds"], s["calibration_dice"], s["test"]
        cal = " / ".join(f"{c[lb]['default']:.3f} -> {c[lb]['chosen']:.3f}" for lb in c)
        ss = f"{fmt(r.get('spec_at_vcdr06'))} / {fmt(r.get('sens_at_vcdr06'))}"
        out.append(
            f"| {s['run']} -> {s.get('site', 'drishti')} | {s['calibration_images']} | "
            f"{t.get('disc', 0.5):g} / {t.get('cup', 0.5):g} | {cal} | "
            f"{fmt(r['disc']['dice_mean'])} | {fmt(r['cup']['dice_mean'])} | "
            f"{fmt(r['vcdr_mae'])} | {fmt(r.get('vcdr_bias_normal'))} | "
            f"{fmt(r.get('vcdr_auc'))} | {ss} | {fmt(r.get('flagged_doubtful'))} |"
        )
    return out


def _flag_counts(flagged: dict[str, int]) -> str:
    """{"any": 3, "flag": 2, ...} -> "3 (flag 2, ...)"."""
    detail = ", ".join(f"{k} {v}" for k, v in flagged.items() if k != "any")
    return f"{flagged.get('any', 0)}" + (f" ({detail})" if detail else "")


def write_selection_markdown(result: dict[str, Any], path: Path) -> None:
    """The table of ``fundus_generalization.py --select``: each run's Drishti-GS1 training-split
    scores and training time."""
    lines = [
        "# Fundus recipe selection on Drishti-GS1's training photographs",
        "",
        f"commit `{result['commit']}`, {result['machine']}, wall time {result['wall_time_s']:.0f} s",
        "",
        "Runs trained without Drishti-GS1, scored on its 50 training photographs (never its test "
        "set); per-image means; vCDR MAE vs the experts' mean.",
        "",
        "| run | disc Dice | cup Dice | vCDR MAE | flagged | train s |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in result["runs"].items():
        lines.append(
            f"| {k} | {r['disc']['dice_mean']:.3f} | {r['cup']['dice_mean']:.3f} | "
            f"{r['vcdr_mae']:.3f} | {r['flagged_doubtful']} | {result['train_time_s'][k]:.0f} |"
        )
    path.write_text("\n".join(lines) + "\n")
