"""``predict_paths`` over folders: outputs that exist are skipped (a killed job resumes), an image
left half-written is redone, ``--overwrite`` redoes everything, the CSV keeps one row per image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from biounet.cli import main
from biounet.predict import output_files, predict_paths
from biounet.predictor import PredictOptions

STEMS = ["a", "b", "c"]


@pytest.fixture
def checkpoint(disc_cup_checkpoint: Path) -> Path:
    """An untrained disc + cup model: predict writes measures.csv for it."""
    return disc_cup_checkpoint


@pytest.fixture
def images(tmp_path: Path, png) -> Path:
    rng = np.random.default_rng(0)
    for s in STEMS:
        png(tmp_path / "in" / f"{s}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return tmp_path / "in"


def run(ck: Path, images: Path, out: Path, **kw) -> tuple[list[str], list[str], list[str]]:
    done, skipped, errors = predict_paths(ck, [images], out, PredictOptions(precision="fp32"), **kw)
    return [p.stem for p in done], [p.stem for p in skipped], errors


def measure_stems(out: Path) -> list[str]:
    with open(out / "measures.csv", newline="") as f:
        return [r["stem"] for r in csv.DictReader(f)]


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_output_files_end_with_the_overlay(tmp_path: Path) -> None:
    names = [p.name for p in output_files(tmp_path, "x", ("disc", "cup"), uncertainty=True)]
    assert names == [
        "x_disc.png",
        "x_prob_disc.png",
        "x_cup.png",
        "x_prob_cup.png",
        "x_uncertainty.png",
        "x_overlay.png",
    ]


def test_second_run_skips_existing_outputs(checkpoint: Path, images: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert run(checkpoint, images, out) == (STEMS, [], [])
    assert len(list(out.glob("*.png"))) == 5 * len(STEMS) and measure_stems(out) == STEMS
    before = mtimes(out)
    assert run(checkpoint, images, out) == ([], STEMS, [])
    assert mtimes(out) == before  # nothing rewritten, measures.csv included
    assert measure_stems(out) == STEMS


def test_a_half_written_image_is_redone(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(checkpoint, images, out)
    # killed while writing b: its overlay (written last) is missing, its measures row is there
    (out / "b_overlay.png").unlink()
    assert run(checkpoint, images, out) == (["b"], ["a", "c"], [])
    assert sorted(measure_stems(out)) == STEMS  # b's old row replaced, not doubled
    assert (out / "b_overlay.png").is_file() and not list(out.glob(".*"))


def test_overwrite_redoes_every_image(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(checkpoint), "--out", str(out), str(images)]
    assert main([*args, "--precision", "fp32"]) == 0
    assert main([*args, "--precision", "fp32"]) == 0
    assert "0 image(s) written" in capsys.readouterr().out.splitlines()[-1]
    assert main([*args, "--precision", "fp32", "--overwrite"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"3 image(s) written to {out}"
    assert measure_stems(out) == STEMS


def test_unreadable_files_are_reported_and_not_skipped_as_done(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    (images / "broken.png").write_bytes(b"")
    out = tmp_path / "out"
    done, skipped, errors = run(checkpoint, images, out)
    assert done == STEMS and skipped == [] and len(errors) == 1 and "broken.png" in errors[0]
    # tried again (and reported again) on the next run; the good ones are skipped
    assert run(checkpoint, images, out) == ([], STEMS, errors)


def test_a_job_with_other_output_settings_is_refused_not_mixed_in(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second job into the same --out with another threshold (or TTA, or checkpoint) would skip
    every image as done and leave the old masks: refused, naming the change; the same job with
    another precision resumes; --overwrite redoes it under the new settings."""
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(checkpoint), "--out", str(out), str(images)]
    assert main([*args, "--precision", "fp32"]) == 0
    before = mtimes(out)
    assert main([*args, "--precision", "fp32", "--threshold", "cup=0.2"]) == 2
    err = capsys.readouterr().err
    assert "holds outputs of another predict job" in err
    assert "label_thresholds [] -> [['cup', 0.2]]" in err and "--overwrite" in err
    assert mtimes(out) == before  # nothing touched
    assert main(args) == 0  # precision auto instead of fp32: other rounding only, resumes
    assert "0 image(s) written" in capsys.readouterr().out
    assert main([*args, "--threshold", "cup=0.2", "--overwrite"]) == 0
    assert main([*args, "--threshold", "cup=0.2"]) == 0  # the new settings are the record now
    assert "0 image(s) written" in capsys.readouterr().out.splitlines()[-1]
