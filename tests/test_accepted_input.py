"""What biounet accepts that a user might expect it to refuse, and the image readers under
property-based fuzzing (any bytes, any damage: an image or a BiounetError, never another exception).

Channels: biounet maps images to the model's channels itself (grey is repeated to RGB, RGB becomes
luminance for a grey model, alpha is dropped); images with more than 4 channels are refused, and TIFF
stacks are refused for training and evaluation and predicted slice by slice (test_bad_input.py). Masks: 0/255 or 0/1, grey or RGB with equal channels; JPEG masks (0/255 with compression's grey edges)
are cut at 128. 16-bit and float
images are scaled per image; a 1 x 1 image is resized like any other, for training and prediction.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from biounet.data.io import read_image, read_mask
from biounet.errors import BiounetError
from input_files import H, W, predict, run_cli, save, write_dataset, write_tiny_checkpoints


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("ck"))


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
def test_train_accepts_tiffs_one_pixel_images_0_1_and_jpeg_masks(tmp_path: Path, capsys) -> None:
    root = write_dataset(tmp_path / "data", n=6)
    for i, name in enumerate(["16bit.tif", "float.tif"]):
        (root / f"images/s{i}.png").unlink()
        save(root / f"images/s{i}.tif", ACCEPTED[name][0])
    save(root / "images/s2.png", np.full((1, 1, 3), 50, np.uint8))
    save(root / "masks/s2.png", np.ones((1, 1), np.uint8))  # 0/1 convention
    save(
        root / "masks/s3.png",
        np.repeat(np.asarray(Image.open(root / "masks/s3.png"))[..., None], 3, -1),
    )
    with Image.open(root / "masks/s4.png") as m:  # a 0/255 mask as JPEG: grey edges, cut at 128
        m.save(root / "masks/s4.jpg", quality=50)
    (root / "masks/s4.png").unlink()
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


def test_predict_writes_masks_of_an_exif_turned_photo_as_it_is_shown(
    tmp_path: Path, tiny_checkpoints, capsys
) -> None:
    """A phone or camera JPEG stored landscape and tagged 'turn 90 degrees': the masks and overlay
    have the shown (portrait) size, so they lie on the image as every viewer shows it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    code, err = predict(tiny_checkpoints[3], [tmp_path / "phone.jpg"], tmp_path / "out", capsys)
    assert code == 0, err
    for name in ("phone_fg.png", "phone_overlay.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size == (H, W)  # PIL's (width, height): turned from the stored W x H
