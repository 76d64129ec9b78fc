"""Bad input wherever a user gives some (dataset folders, single images, flags, config files,
checkpoints): each case through ``biounet.cli.main`` ends with one line on stderr that names the file
or flag, a non-zero exit status and no traceback. What is accepted instead: test_accepted_input.py.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biounet.checkpoint import FORMAT
from input_files import (
    H,
    W,
    assert_one_line,
    five_channels,
    huge_png,
    huge_tiff,
    pages_one_by_one,
    predict,
    run_cli,
    save,
    to_jpeg_truncated,
    truncate,
    write_dataset,
    write_tiny_checkpoints,
    z_stack,
)


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("ck"))


DATA_CASES: dict[str, tuple[Callable[[Path], object], list[str], list[str]]] = {
    "corrupt-image": (lambda r: (r / "images/s0.png").write_bytes(b"not a png"), [], ["s0.png", "cannot decode"]),
    "truncated-png": (lambda r: truncate(r / "images/s0.png"), [], ["s0.png", "cannot decode"]),
    "truncated-jpeg": (to_jpeg_truncated, [], ["s0.jpg", "cannot decode"]),
    "zero-byte-image": (lambda r: (r / "images/s1.png").write_bytes(b""), [], ["s1.png", "file is empty"]),
    "zero-byte-mask": (lambda r: (r / "masks/s1.png").write_bytes(b""), [], ["masks/s1.png", "file is empty"]),
    "missing-mask": (lambda r: (r / "masks/s2.png").unlink(), [], ["masks", "'foreground' has no mask for ['s2']"]),
    "mask-other-size": (lambda r: save(r / "masks/s2.png", np.zeros((5, 6), np.uint8)), [], ["s2.png", "mask is 6x5 but its image is 14x12"]),
    "rgb-colour-mask": (lambda r: save(r / "masks/s0.png", np.dstack([np.zeros((H, W), np.uint8)] * 2 + [np.full((H, W), 255, np.uint8)])), [], ["s0.png", "mask is a colour image"]),
    "full-grey-mask": (lambda r: save(r / "masks/s0.png", np.full((H, W), 128, np.uint8)), [], ["s0.png", "mask is not binary (values [128])"]),
    "huge-png-header": (lambda r: huge_png(r / "images/s3.png"), [], ["s3.png", "image too large"]),
    "huge-tiff-header": (lambda r: ((r / "images/s3.png").unlink(), huge_tiff(r / "images/s3.tif")), [], ["s3.tif", "image too large", "20000 x 20000"]),
    "five-channel-tiff": (lambda r: ((r / "images/s3.png").unlink(), five_channels(r / "images/s3.tif")), [], ["s3.tif", "unsupported image shape (12, 14, 5)"]),
    "tiff-z-stack": (lambda r: ((r / "images/s3.png").unlink(), z_stack(r / "images/s3.tif")), [], ["s3.tif", "a stack of 5 images (5, 12, 14)"]),
    "tiff-pages-one-by-one": (lambda r: ((r / "images/s3.png").unlink(), pages_one_by_one(r / "images/s3.tif")), [], ["s3.tif", "3 pages of 14 x 12 pixels (a stack)"]),
    "unknown-invert-label": (lambda r: None, ["--invert-masks", "nope"], ["--invert-masks: unknown label(s) ['nope']"]),
    "empty-images-folder": (lambda r: [p.unlink() for p in (r / "images").iterdir()], [], ["images", "no images found"]),
    "no-images-folder": (lambda r: shutil.rmtree(r / "images"), [], ["images", "folder not found"]),
    "no-masks-folder": (lambda r: shutil.rmtree(r / "masks"), [], ["masks", "no label has a mask for every image"]),
    "duplicate-stems": (lambda r: shutil.copy(r / "images/s0.png", r / "images/s0.tif"), [], ["images", "share the stem(s) ['s0']"]),
    "unknown-label": (lambda r: None, ["--labels", "foreground,nope"], ["--labels", "unknown label 'nope'"]),
    "unknown-preset": (lambda r: None, ["--preset", "nope"], ["unknown preset 'nope'"]),
    "corrupt-splits-json": (lambda r: (r / "splits.json").write_text("{"), [], ["splits.json", "cannot read splits"]),
    "splits-unknown-stem": (lambda r: (r / "splits.json").write_text(json.dumps({"train": ["zz"]})), [], ["splits.json", "no image: ['zz']"]),
    "one-image-only": (lambda r: [(r / f"images/s{i}.png").unlink() for i in (1, 2, 3)], [], ["1 training images are too few"]),
}  # fmt: skip


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_bad_dataset_or_flag_for_train(case: str, tmp_path: Path, capsys) -> None:
    change, flags, needles = DATA_CASES[case]
    root = write_dataset(tmp_path / "data")
    change(root)
    argv = ["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1"]
    t0 = time.perf_counter()
    code, err = run_cli([*argv, "--image-size", "32", *flags], capsys)
    assert_one_line(code, err, "biounet: error: ", needles)
    assert time.perf_counter() - t0 < 20  # refused up front, never a long decode
    assert not (tmp_path / "run" / "last.pt").exists()


FLAG_CASES: dict[str, tuple[list[str], list[str]]] = {
    "epochs-zero": (["--epochs", "0"], ["--epochs", "must be > 0, got 0"]),
    "epochs-negative": (["--epochs", "-3"], ["--epochs", "must be > 0, got -3"]),
    "epochs-not-a-number": (["--epochs", "two"], ["--epochs", "expected a whole number"]),
    "batch-size-zero": (["--batch-size", "0"], ["--batch-size", "must be > 0"]),
    "batch-size-negative": (["--batch-size", "-2"], ["--batch-size", "must be > 0"]),
    "image-size-zero": (["--image-size", "0"], ["--image-size", "must be > 0"]),
    "lr-zero": (["--lr", "0"], ["--lr", "must be > 0"]),
    "val-fraction-one": (["--val-fraction", "1"], ["--val-fraction", "must be in [0, 1)"]),
    "unknown-precision": (["--precision", "fp64"], ["--precision", "invalid choice: 'fp64'"]),
    "in-channels-2": (["--in-channels", "2"], ["--in-channels", "invalid choice: 2"]),
    "unknown-flag": (["--epocs", "3"], ["unrecognized arguments: --epocs"]),
}


@pytest.mark.parametrize("case", FLAG_CASES, ids=list(FLAG_CASES))
def test_bad_train_flag(case: str, tmp_path: Path, capsys) -> None:
    flags, needles = FLAG_CASES[case]
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *flags]
    assert_one_line(*run_cli(argv, capsys), "biounet: error: ", needles)


def resume_case(run: Path, case: str) -> list[str]:
    """Make run folder ``run`` broken in the way ``case`` names; returns the extra flags."""
    run.mkdir()
    if case == "bad-yaml":
        (run / "config.yaml").write_text("train: [unclosed")
    elif case == "yaml-not-a-mapping":
        (run / "config.yaml").write_text("- 1\n- 2\n")
    elif case in ("unknown-config-key", "no-last-pt", "extra-flag"):
        key = "epoch" if case == "unknown-config-key" else "epochs"
        (run / "config.yaml").write_text(f"train:\n  {key}: 3\n")
    return ["--lr", "0.1"] if case == "extra-flag" else []


RESUME_CASES = {
    "no-config": ["config.yaml: not found; --resume takes a run folder"],
    "bad-yaml": ["config.yaml: cannot read config: expected ',' or ']'", "line 1, column 17"],
    "yaml-not-a-mapping": ["config.yaml: config must be a mapping"],
    "unknown-config-key": ["unknown TrainConfig keys ['epoch']"],
    "no-last-pt": ["last.pt: not found; --resume needs"],
    "extra-flag": ["drop --lr (only --epochs may change)"],
}


@pytest.mark.parametrize("case", RESUME_CASES, ids=list(RESUME_CASES))
def test_bad_resume(case: str, tmp_path: Path, capsys, synthetic_data: Path) -> None:
    run = tmp_path / "run"
    flags = resume_case(run, case)
    if case == "no-last-pt":  # a config that builds: data and labels of the tiny dataset
        (run / "config.yaml").write_text(
            f"data:\n  root: {synthetic_data}\n  image_size: 32\ntrain:\n  epochs: 1\n"
        )
    code, err = run_cli(["train", "--resume", str(run), *flags], capsys)
    assert_one_line(code, err, "biounet: error: ", RESUME_CASES[case])


def test_train_without_data_or_resume(tmp_path: Path, capsys) -> None:
    code, err = run_cli(["train", "--out", str(tmp_path / "r")], capsys)
    assert_one_line(code, err, "biounet: error: ", ["train needs --data and --out"])


def make_checkpoint(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "a-png":
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    elif kind == "a-pickle":  # a pickle stream's header, then garbage
        path.write_bytes(b"\x80\x02" + np.random.default_rng(0).bytes(200))
    elif kind in ("older-format", "newer-format"):
        payload = torch.load(good, weights_only=True)
        payload.update(format_version=0 if kind == "older-format" else 7, biounet_version="0.0.9")
        torch.save(payload, path)
    elif kind == "pickled-code":
        torch.save({"format": FORMAT, "format_version": 1, "x": Path("/")}, path)
    return path


CHECKPOINT_CASES = {
    "missing": ["missing.pt: checkpoint not found"],
    "truncated": ["truncated.pt: not a readable checkpoint"],
    "random-bytes": ["random-bytes.pt: not a readable checkpoint (not a file written by torch"],
    "a-png": [
        "a-png.pt: not a readable checkpoint (not a file written by torch.save: a PNG image)"
    ],
    "a-pickle": ["a-pickle.pt: not a readable checkpoint (corrupt"],
    "older-format": ["older-format.pt: checkpoint format 0 (biounet 0.0.9)", "reads format 1"],
    "newer-format": ["newer-format.pt: checkpoint format 7 (biounet 0.0.9)"],
    "pickled-code": ["pickled-code.pt: refused", "could run code"],
}


@pytest.mark.parametrize("kind", CHECKPOINT_CASES, ids=list(CHECKPOINT_CASES))
def test_bad_checkpoint(kind: str, tmp_path: Path, tiny_checkpoints, capsys) -> None:
    ck = make_checkpoint(kind, tmp_path, tiny_checkpoints[3])
    img = tmp_path / "x.png"
    save(img, np.zeros((H, W, 3), np.uint8))
    code, err = predict(ck, [img], tmp_path / "out", capsys)
    assert_one_line(code, err, "biounet: error: ", CHECKPOINT_CASES[kind])


PREDICT_INPUT_CASES: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "missing-path": (lambda d: d / "nothere.png", ["nothere.png: no such file or folder"]),
    "not-an-image": (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", ["notes.txt: not an image file"]),
    "empty-folder": (lambda d: (d / "empty").mkdir() or d / "empty", ["no input images found"]),
    "images-in-subfolders": (lambda d: [save(d / f"top/patient{i}/a.png", np.zeros((H, W), np.uint8)) for i in (1, 2)] and d / "top", ["no input images found", "top holds images in 2 subfolder(s) (patient1/, patient2/)", "top/*/"]),
    "duplicate-stems": (lambda d: [save(d / f"f/a.{e}", np.zeros((H, W), np.uint8)) for e in ("png", "tif")] and d / "f", ["share the stem(s) ['a']"]),
}  # fmt: skip


@pytest.mark.parametrize("case", PREDICT_INPUT_CASES, ids=list(PREDICT_INPUT_CASES))
def test_bad_predict_input(case: str, tmp_path: Path, tiny_checkpoints, capsys) -> None:
    (tmp_path / "f").mkdir()
    make, needles = PREDICT_INPUT_CASES[case]
    code, err = predict(tiny_checkpoints[3], [make(tmp_path)], tmp_path / "out", capsys)
    assert_one_line(code, err, "biounet: error: ", needles)


def test_predict_out_is_a_file(tmp_path: Path, tiny_checkpoints, capsys) -> None:
    save(tmp_path / "x.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "out").write_text("a file where the output folder should go")
    code, err = predict(tiny_checkpoints[3], [tmp_path / "x.png"], tmp_path / "out", capsys)
    assert_one_line(code, err, "biounet: error: ", [f"{tmp_path / 'out'}: is a file; --out names"])


UNREADABLE = {
    "corrupt.png": lambda p: p.write_bytes(b"\x89PNG garbage"),
    "empty.tif": lambda p: p.write_bytes(b""),
    "bomb.png": huge_png,
    "bomb.tif": huge_tiff,
    "five.tif": five_channels,
}


@pytest.mark.parametrize("name", UNREADABLE, ids=list(UNREADABLE))
def test_predict_reports_an_unreadable_file_and_goes_on(
    name, tmp_path: Path, tiny_checkpoints, capsys
):
    """Prediction skips a file it cannot read (a long job is not lost to one bad file), says so in one
    line, and exits 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "good.png", np.zeros((H, W, 3), np.uint8))
    UNREADABLE[name](folder / name)
    code, err = predict(tiny_checkpoints[3], [folder], tmp_path / "out", capsys)
    assert code == 1
    assert_one_line(code, err, "biounet: skipped: ", [name])
    assert (tmp_path / "out" / "good_fg.png").is_file()


@pytest.mark.parametrize(
    ("name", "make", "n"), [("stack.tif", z_stack, 5), ("pages.tif", pages_one_by_one, 3)]
)
def test_predict_reads_a_tiff_stack_slice_by_slice(
    name, make, n: int, tmp_path: Path, tiny_checkpoints, capsys
) -> None:
    """A z-stack (one series) or pages written one by one: each slice predicted as an image of
    its own, named <stem>_z000 ..; a job run again skips the slices done."""
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "good.png", np.zeros((H, W, 3), np.uint8))
    make(folder / name)
    code, _ = predict(tiny_checkpoints[3], [folder], tmp_path / "out", capsys)
    assert code == 0
    stem = Path(name).stem
    for k in range(n):
        assert (tmp_path / "out" / f"{stem}_z{k:03d}_fg.png").is_file()
    assert not (tmp_path / "out" / f"{stem}_z{n:03d}_fg.png").exists()
    from biounet.predict import predict_paths

    (tmp_path / "out" / f"{stem}_z001_overlay.png").unlink()  # one slice not finished
    done, skipped, errors = predict_paths(
        tiny_checkpoints[3], [folder], tmp_path / "out", show_progress=False
    )
    assert (len(done), len(skipped), errors) == (1, n, [])
    assert done == [folder / name] and (tmp_path / "out" / f"{stem}_z001_overlay.png").is_file()


def test_a_slice_is_read_as_its_own_image(tmp_path: Path) -> None:
    import tifffile

    from biounet.data.io import read_image, stack_size
    from biounet.errors import BiounetError

    stack = np.stack([np.full((H, W), 10 * k, np.uint8) for k in range(4)])
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    assert stack_size(tmp_path / "s.tif") == 4
    assert int(read_image(tmp_path / "s.tif", 2)[0, 0, 0]) == 20
    with pytest.raises(BiounetError, match=r"s\.tif: no slice 4 \(the stack has 4\)"):
        read_image(tmp_path / "s.tif", 4)
    with pytest.raises(BiounetError, match="predict reads a stack slice by slice"):
        read_image(tmp_path / "s.tif")
    save(tmp_path / "one.png", np.zeros((H, W, 3), np.uint8))
    assert stack_size(tmp_path / "one.png") == 1 == stack_size(tmp_path / "missing.tif")


def test_predict_refuses_two_inputs_writing_the_same_outputs(
    tmp_path: Path, tiny_checkpoints, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    z_stack(folder / "a.tif")
    save(tmp_path / "a_z000.png", np.zeros((H, W, 3), np.uint8))
    code, err = predict(
        tiny_checkpoints[3], [folder, tmp_path / "a_z000.png"], tmp_path / "o", capsys
    )
    assert_one_line(code, err, "biounet: error: ", ["both would write the outputs of 'a_z000'"])


def test_train_refuses_a_folder_that_holds_a_run(tmp_path: Path, capsys) -> None:
    """A second train into the same --out would replace the first run's files one by one."""
    root = write_dataset(tmp_path / "data")
    argv = ["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert run_cli([*argv, "--image-size", "32"], capsys)[0] == 0
    before = (tmp_path / "run" / "metrics.csv").read_bytes()
    code, err = run_cli([*argv, "--image-size", "32"], capsys)
    assert_one_line(code, err, "biounet: error: ", ["run: holds a run already", "--resume"])
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == before
    (tmp_path / "afile").write_text("x")
    code, err = run_cli(["train", "--data", str(root), "--out", str(tmp_path / "afile")], capsys)
    assert_one_line(code, err, "biounet: error: ", ["afile: is a file"])


def test_predict_refuses_its_input_folder_as_out(tmp_path: Path, tiny_checkpoints, capsys) -> None:
    save(tmp_path / "in" / "x.png", np.zeros((H, W, 3), np.uint8))
    code, err = predict(tiny_checkpoints[3], [tmp_path / "in"], tmp_path / "in", capsys)
    assert_one_line(code, err, "biounet: error: ", ["in: is also an input folder"])
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["x.png"]


def test_export_and_ensemble_never_overwrite_a_file(
    tmp_path: Path, tiny_checkpoints, capsys
) -> None:
    victim = tmp_path / "victim.pt"
    shutil.copy(tiny_checkpoints[3], victim)
    code, err = run_cli(["export", "--checkpoint", str(victim), "--out", str(victim)], capsys)
    assert_one_line(code, err, "biounet: error: ", ["victim.pt: exists; export never overwrites"])
    assert victim.read_bytes() == Path(tiny_checkpoints[3]).read_bytes()
    code, err = run_cli(["ensemble", "--out", str(victim), str(victim), str(victim)], capsys)
    assert_one_line(code, err, "biounet: error: ", ["victim.pt: exists; ensemble never overwrites"])


def test_train_em_refuses_a_tile_the_network_cannot_produce(tmp_path: Path, capsys) -> None:
    root = write_dataset(tmp_path / "data")
    argv = ["train-em", "--data", str(root), "--out", str(tmp_path / "em"), "--out-tile", "60"]
    code, err = run_cli(argv, capsys)
    assert_one_line(
        code, err, "biounet: error: ", ["--out-tile 60", "nearest valid sizes: 52 and 68"]
    )
    assert not (tmp_path / "em").exists()


def test_a_run_folder_is_taken_as_its_checkpoint(tmp_path: Path, tiny_checkpoints, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    save(tmp_path / "in" / "x.png", np.zeros((H, W, 3), np.uint8))
    code, err = predict(run, [tmp_path / "in"], tmp_path / "out", capsys)
    assert_one_line(
        code, err, "biounet: error: ", ["run: a folder without a checkpoint (fundus.pt"]
    )
    shutil.copy(tiny_checkpoints[3], run / "best.pt")
    assert predict(run, [tmp_path / "in"], tmp_path / "out", capsys)[0] == 0
    assert (tmp_path / "out" / "x_overlay.png").is_file()
    (tmp_path / "empty.pt").write_bytes(b"")
    code, err = predict(tmp_path / "empty.pt", [tmp_path / "in"], tmp_path / "o2", capsys)
    assert_one_line(
        code, err, "biounet: error: ", ["empty.pt: not a readable checkpoint (the file is empty)"]
    )


def test_evaluate_names_the_models_labels_and_refuses_a_dataset_list(
    tmp_path: Path, tiny_checkpoints, capsys
) -> None:
    root = write_dataset(tmp_path / "data")
    (root / "masks" / "other").mkdir()
    for p in sorted((root / "masks").glob("*.png")):
        p.rename(root / "masks" / "other" / p.name)
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoints[3]), "--out", str(tmp_path / "ev")]
    code, err = run_cli([*argv, "--data", str(root)], capsys)
    assert_one_line(code, err, "biounet: error: ", ["(the model's labels): unknown label"])
    (tmp_path / "list.yaml").write_text("datasets:\n  - root: data\n")
    code, err = run_cli([*argv, "--data", str(tmp_path / "list.yaml")], capsys)
    assert_one_line(code, err, "biounet: error: ", ["list.yaml: evaluate takes one dataset folder"])


def test_train_em_refuses_a_device_this_machine_lacks(tmp_path: Path, capsys) -> None:
    root = write_dataset(tmp_path / "data")
    for device, needle in (("gpu", "device 'gpu': not a device"), ("cuda:7", "CUDA GPU(s)")):
        argv = ["train-em", "--data", str(root), "--out", str(tmp_path / "em"), "--device", device]
        assert_one_line(*run_cli(argv, capsys), "biounet: error: ", [needle])
        assert not (tmp_path / "em").exists()


def test_predict_paths_takes_any_iterable_of_inputs(tmp_path: Path, tiny_checkpoints) -> None:
    from biounet.predict import predict_paths

    save(tmp_path / "in" / "x.png", np.zeros((H, W, 3), np.uint8))
    done, _, errors = predict_paths(
        tiny_checkpoints[3], (tmp_path / "in").glob("*.png"), tmp_path / "out", show_progress=False
    )
    assert [p.name for p in done] == ["x.png"] and errors == []


def test_cv_help_offers_only_the_train_options_cv_takes() -> None:
    from biounet.cli import parser

    helptext = parser()._subparsers._group_actions[0].choices["cv"].format_help()
    for flag in ("--resume", "--polar ", "--soft-targets", "--roi-scale", "--locator-epochs"):
        assert flag not in helptext, flag
    assert "--epochs" in helptext and "--folds" in helptext


def test_predict_refuses_a_threshold_outside_0_1(tmp_path: Path, tiny_checkpoints, capsys) -> None:
    save(tmp_path / "x.png", np.zeros((H, W, 3), np.uint8))
    argv = ["predict", "--checkpoint", str(tiny_checkpoints[3]), "--out", str(tmp_path / "o")]
    code, err = run_cli([*argv, "--threshold", "1.5", str(tmp_path / "x.png")], capsys)
    assert_one_line(code, err, "biounet: error: ", ["threshold: must be in (0, 1), got 1.5"])
