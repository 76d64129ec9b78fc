"""Builders of bad and unusual input files, and the CLI harness shared by test_bad_input.py and
test_accepted_input.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from biounet.checkpoint import save_checkpoint
from biounet.cli import main
from biounet.config import ModelConfig
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
    """(H, W) or (H, W, C) as PNG, or as TIFF with the channels last (C = 2: grey + alpha)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".tif":
        Image.fromarray(arr).save(path)
    elif arr.ndim == 3 and arr.shape[-1] == 2:
        tifffile.imwrite(path, arr, photometric="minisblack", extrasamples=["unassalpha"])
    else:
        tifffile.imwrite(path, arr)


def five_channels(path: Path) -> None:
    """A (H, W, 5) multi-channel TIFF (e.g. a 5-band microscope image)."""
    tifffile.imwrite(
        path, np.zeros((H, W, 5), np.uint8), photometric="minisblack", planarconfig="contig"
    )


def z_stack(path: Path) -> None:
    """A 5-page (5, H, W) TIFF stack (a z-stack or time series, not one 2D image)."""
    tifffile.imwrite(path, np.zeros((5, H, W), np.uint8), photometric="minisblack")


def pages_one_by_one(path: Path) -> None:
    """3 same-size pages written one at a time: tifffile sees 3 series of one page each."""
    with tifffile.TiffWriter(path) as tw:
        for _ in range(3):
            tw.write(np.zeros((H, W), np.uint8), photometric="minisblack")


def truncate(path: Path, keep: int = 60) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def to_jpeg_truncated(root: Path) -> None:
    (root / "images/s0.png").unlink()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "images/s0.jpg")
    truncate(root / "images/s0.jpg", 200)


def write_tiny_checkpoints(folder: Path) -> dict[int, Path]:
    """Untrained 1- and 3-channel single-label models (what predict does with input, not how well)."""
    for c in (1, 3):
        cfg = ModelConfig(in_channels=c, out_channels=1, base_width=4, depth=2)
        torch.manual_seed(0)
        save_checkpoint(folder / f"c{c}.pt", build_model(cfg), cfg, ("fg",), preprocess_spec(32, c))
    return {c: folder / f"c{c}.pt" for c in (1, 3)}


def predict(ck: Path, inputs: list[Path], out: Path, capsys) -> tuple[int, str]:
    return run_cli(
        ["predict", "--checkpoint", str(ck), "--out", str(out), *map(str, inputs)], capsys
    )
