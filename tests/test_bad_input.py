"""Bad input wherever a user gives some: each case through ``biounet.cli.main`` ends with one line on
stderr that names the file or flag, a non-zero exit status and no traceback. What is accepted instead
(16-bit and float TIFFs, 1-pixel images, grey/RGB/alpha whatever the model's channels) is shown too.

Channels: biounet maps images to the model's channels itself (grey is repeated to RGB, RGB becomes
luminance for a grey model, alpha is dropped); only images with more than 4 channels are refused.
Masks: 0/255 or 0/1, grey or RGB with equal channels, are accepted; colour and non-binary masks
(e.g. a full-grey 128 mask) are refused. Images over 200 million pixels are refused from their header.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from biounet.checkpoint import FORMAT, save_checkpoint
from biounet.cli import main
from biounet.config import ModelConfig
from biounet.data.io import read_image, read_mask
from biounet.errors import BiounetError
from biounet.infer import preprocess_spec
from biounet.models import build_model

H, W = 12, 14


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(["-q", *argv])
    except SystemExit as e:  # argparse errors exit from inside parse_args
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, prefix: str, needles: list[str]) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def huge_png(path: Path, side: int = 20_000) -> Path:
    """A 100-byte PNG whose header claims side x side grey pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


def huge_tiff(path: Path, side: int = 20_000) -> Path:
    """A 130-byte TIFF whose header claims side x side 8-bit grey pixels in one absent strip."""
    tags = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 200),
            (277, 3, 1), (278, 4, side), (279, 4, side * side)]  # fmt: skip
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", *t[:2], 1, t[2]) for t in tags
    )
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0))
    return path


def write_dataset(root: Path, n: int = 4) -> Path:
    """images/s0..s{n-1}.png (RGB, 14x12) and masks/s*.png (0/255): one label, 'foreground'."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            root / f"images/s{i}.png"
        )
        mask = np.zeros((H, W), np.uint8)
        mask[3:9, 4 + i : 10] = 255
        Image.fromarray(mask).save(root / f"masks/s{i}.png")
    return root


def save(path: Path, arr: np.ndarray) -> None:
    if path.suffix == ".tif":
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)


def truncate(path: Path, keep: int = 60) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def to_jpeg_truncated(root: Path) -> None:
    (root / "images/s0.png").unlink()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "images/s0.jpg")
    truncate(root / "images/s0.jpg", 200)


# id -> (change to a valid dataset, extra flags, what the error line must contain)
DATA_CASES: dict[str, tuple[Callable[[Path], object], list[str], list[str]]] = {
    "corrupt-image": (lambda r: (r / "images/s0.png").write_bytes(b"not a png"), [], ["s0.png", "cannot decode"]),
    "truncated-png": (lambda r: truncate(r / "images/s0.png"), [], ["s0.png", "cannot decode"]),
    "truncated-jpeg": (to_jpeg_truncated, [], ["s0.jpg", "cannot decode"]),
    "zero-byte-image": (lambda r: (r / "images/s1.png").write_bytes(b""), [], ["s1.png", "file is empty"]),
    "zero-byte-mask": (lambda r: (r / "masks/s1.png").write_bytes(b""), [], ["masks/s1.png", "file is empty"]),
    "missing-mask": (lambda r: (r / "masks/s2.png").unlink(), [], ["masks", "no mask for image(s) ['s2']"]),
    "mask-other-size": (lambda r: save(r / "masks/s2.png", np.zeros((5, 6), np.uint8)), [], ["s2.png", "mask is 6x5 but its image is 14x12"]),
    "rgb-colour-mask": (lambda r: save(r / "masks/s0.png", np.dstack([np.zeros((H, W), np.uint8)] * 2 + [np.full((H, W), 255, np.uint8)])), [], ["s0.png", "mask is a colour image"]),
    "full-grey-mask": (lambda r: save(r / "masks/s0.png", np.full((H, W), 128, np.uint8)), [], ["s0.png", "mask is not binary (values [128])"]),
    "huge-png-header": (lambda r: huge_png(r / "images/s3.png"), [], ["s3.png", "image too large"]),
    "huge-tiff-header": (lambda r: ((r / "images/s3.png").unlink(), huge_tiff(r / "images/s3.tif")), [], ["s3.tif", "image too large", "20000 x 20000"]),
    "five-channel-tiff": (lambda r: ((r / "images/s3.png").unlink(), save(r / "images/s3.tif", np.zeros((H, W, 5), np.uint8))), [], ["s3.tif", "unsupported image shape"]),
    "empty-images-folder": (lambda r: [p.unlink() for p in (r / "images").iterdir()], [], ["images", "no images found"]),
    "no-images-folder": (lambda r: shutil.rmtree(r / "images"), [], ["images", "folder not found"]),
    "no-masks-folder": (lambda r: shutil.rmtree(r / "masks"), [], ["masks", "no label has a mask for every image"]),
    "duplicate-stems": (lambda r: shutil.copy(r / "images/s0.png", r / "images/s0.tif"), [], ["images", "share the stem(s) ['s0']"]),
    "unknown-label": (lambda r: None, ["--labels", "nope"], ["--labels", "unknown label 'nope'"]),
    "unknown-preset": (lambda r: None, ["--preset", "nope"], ["unknown preset 'nope'"]),
    "corrupt-splits-json": (lambda r: (r / "splits.json").write_text("{"), [], ["splits.json", "cannot read splits"]),
    "splits-unknown-stem": (lambda r: (r / "splits.json").write_text(json.dumps({"train": ["zz"]})), [], ["splits.json", "no image: ['zz']"]),
    "one-image-only": (lambda r: [(r / f"images/s{i}.png").unlink() for i in (1, 2, 3)], [], ["1 training images are too few"]),
    "in-channels-2": (lambda r: None, ["--in-channels", "2"], ["--in-channels", "2"]),
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
    "unknown-flag": (["--epoch", "3"], ["unrecognized arguments"]),
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
    "bad-yaml": ["config.yaml: cannot read config"],
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


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Untrained 1- and 3-channel single-label models (what predict does with input, not how well)."""
    folder = tmp_path_factory.mktemp("ck")
    for c in (1, 3):
        cfg = ModelConfig(in_channels=c, out_channels=1, base_width=4, depth=2)
        torch.manual_seed(0)
        save_checkpoint(folder / f"c{c}.pt", build_model(cfg), cfg, ("fg",), preprocess_spec(32, c))
    return {c: folder / f"c{c}.pt" for c in (1, 3)}


def predict(ck: Path, inputs: list[Path], out: Path, capsys) -> tuple[int, str]:
    return run_cli(
        ["predict", "--checkpoint", str(ck), "--out", str(out), *map(str, inputs)], capsys
    )


def make_checkpoint(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "a-png":
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
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
    "random-bytes": ["random-bytes.pt: not a readable checkpoint"],
    "a-png": ["a-png.pt: not a readable checkpoint"],
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
    "duplicate-stems": (lambda d: [save(d / f"f/a.{e}", np.zeros((H, W), np.uint8)) for e in ("png", "tif")] and d / "f", ["share the stem(s) ['a']"]),
}  # fmt: skip


@pytest.mark.parametrize("case", PREDICT_INPUT_CASES, ids=list(PREDICT_INPUT_CASES))
def test_bad_predict_input(case: str, tmp_path: Path, tiny_checkpoints, capsys) -> None:
    (tmp_path / "f").mkdir()
    make, needles = PREDICT_INPUT_CASES[case]
    code, err = predict(tiny_checkpoints[3], [make(tmp_path)], tmp_path / "out", capsys)
    assert_one_line(code, err, "biounet: error: ", needles)


UNREADABLE = {
    "corrupt.png": lambda p: p.write_bytes(b"\x89PNG garbage"),
    "empty.tif": lambda p: p.write_bytes(b""),
    "bomb.png": huge_png,
    "bomb.tif": huge_tiff,
    "five.tif": lambda p: save(p, np.zeros((H, W, 5), np.uint8)),
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


ACCEPTED = {  # name -> (array written, channels of the model)
    "16bit.tif": (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 300, 3),
    "float.tif": (np.linspace(-1, 5, H * W, dtype=np.float32).reshape(H, W), 3),
    "one-pixel.png": (np.full((1, 1, 3), 200, np.uint8), 3),
    "rgba.png": (np.full((H, W, 4), 100, np.uint8), 3),
    "grey-alpha.tif": (np.full((H, W, 2), 100, np.uint8), 3),
    "grey.png": (np.full((H, W), 100, np.uint8), 3),
    "rgb-to-grey-model.png": (np.full((H, W, 3), 100, np.uint8), 1),
}


@pytest.mark.parametrize("name", ACCEPTED, ids=list(ACCEPTED))
def test_predict_accepts(name: str, tmp_path: Path, tiny_checkpoints, capsys) -> None:
    arr, channels = ACCEPTED[name]
    save(tmp_path / name, arr)
    code, err = predict(tiny_checkpoints[channels], [tmp_path / name], tmp_path / "out", capsys)
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "out" / f"{Path(name).stem}_fg.png"))
    assert mask.shape == arr.shape[:2]  # at the input's own size, 1 x 1 included


@pytest.mark.slow
def test_train_accepts_tiffs_one_pixel_images_and_0_1_masks(tmp_path: Path, capsys) -> None:
    root = write_dataset(tmp_path / "data", n=6)
    for i, (name, arr) in enumerate(list(ACCEPTED.items())[:2]):
        (root / f"images/s{i}.png").unlink()
        save(root / f"images/s{i}.tif", arr)
    save(root / "images/s2.png", np.full((1, 1, 3), 50, np.uint8))
    save(root / "masks/s2.png", np.ones((1, 1), np.uint8))  # 0/1 convention
    save(
        root / "masks/s3.png",
        np.repeat(np.asarray(Image.open(root / "masks/s3.png"))[..., None], 3, -1),
    )
    argv = ["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1"]
    code, err = run_cli(
        [*argv, "--image-size", "32", "--batch-size", "2", "--precision", "fp32"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "run" / "last.pt").is_file()


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=300), ext=st.sampled_from(["png", "jpg", "tif", "bmp"]))
def test_readers_on_arbitrary_bytes_return_an_image_or_a_biounet_error(data: bytes, ext: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x.{ext}"
        path.write_bytes(data)
        for reader in (read_image, read_mask):
            try:
                out = reader(path)
            except BiounetError as e:
                assert str(e).startswith(str(path))
            else:
                assert out.dtype == np.uint8 and out.ndim in (2, 3)


GOOD_FILES: dict[str, bytes] = {}


def good_file(ext: str) -> bytes:
    """A valid 9 x 11 RGB file of the format, made once."""
    if ext not in GOOD_FILES:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"g.{ext}"
            save(path, np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8))
            GOOD_FILES[ext] = path.read_bytes()
    return GOOD_FILES[ext]


@settings(max_examples=80, deadline=None)
@given(
    ext=st.sampled_from(["png", "jpg", "tif", "bmp"]),
    cut=st.floats(0, 1),
    flip=st.integers(0, 10**6),
)
def test_readers_on_damaged_files(ext: str, cut: float, flip: int) -> None:
    """A valid file cut short or with one byte flipped: the image or a BiounetError, nothing else."""
    data = bytearray(good_file(ext))
    data[flip % len(data)] ^= 0xFF
    data = data[: max(1, int(len(data) * cut))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x.{ext}"
        path.write_bytes(bytes(data))
        try:
            out = read_image(path)
        except BiounetError as e:
            assert str(e).startswith(str(path))
        else:
            assert out.dtype == np.uint8 and out.shape[2] in (1, 3)
