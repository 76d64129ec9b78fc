"""Reading images and masks: formats, bit depths, conventions and errors that name the file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from biounet.data.io import read_image, read_mask, save_png, to_uint8
from biounet.errors import BiounetError

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
MASK = np.zeros((5, 7), dtype=np.uint8)
MASK[1:4, 2:6] = 1


def save(path: Path, arr: np.ndarray, mode: str | None = None, **kw: object) -> Path:
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, arr, **kw)
    else:
        Image.fromarray(arr, mode).save(path, **kw)
    return path


@pytest.mark.parametrize(
    ("arr", "mode", "expected"),
    [(GREY, "L", GREY[..., None]), (RGB, "RGB", RGB), (np.dstack([RGB, GREY]), "RGBA", RGB)],
    ids=["grey", "rgb", "rgba-drops-alpha"],
)
def test_png_is_read_exactly(tmp_path: Path, arr: np.ndarray, mode: str, expected: np.ndarray):
    out = read_image(save(tmp_path / "x.png", arr, mode))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_jpeg_rgb_and_grey(tmp_path: Path) -> None:
    smooth = np.add.outer(np.arange(16) * 8, np.arange(24) * 4).astype(np.uint8)  # (16, 24)
    rgb = np.dstack([smooth, smooth // 2, 255 - smooth])
    out = read_image(save(tmp_path / "x.jpg", rgb, quality=95))
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 4  # lossy, but close
    out = read_image(save(tmp_path / "g.jpeg", smooth, quality=95))
    assert out.shape == (16, 24, 1)


def test_8bit_tiff_kept_as_is(tmp_path: Path) -> None:
    np.testing.assert_array_equal(read_image(save(tmp_path / "g.tif", GREY)), GREY[..., None])
    np.testing.assert_array_equal(read_image(save(tmp_path / "c.tiff", RGB)), RGB)


def test_channels_first_tiff_is_moved_to_last(tmp_path: Path) -> None:
    chw = np.moveaxis(RGB, -1, 0)  # (3, 5, 7)
    out = read_image(save(tmp_path / "chw.tif", chw, photometric="rgb", planarconfig="separate"))
    np.testing.assert_array_equal(out, RGB)


def test_16bit_tiff_is_scaled_between_percentiles(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 200 * 10).astype(np.uint16).reshape(200, 10)
    out = read_image(save(tmp_path / "r.tif", ramp))
    assert out.shape == (200, 10, 1) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out[..., 0].ravel().astype(int)) >= 0).all()  # monotone
    # 0.5th / 99.5th percentiles map to 0 / 255: the middle value maps to ~128
    assert abs(int(out[100, 0, 0]) - 128) <= 1


def test_16bit_png_is_read(tmp_path: Path) -> None:
    arr = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    out = read_image(save(tmp_path / "x.png", arr))
    assert out.shape == (3, 4, 1) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_float_tiff_scaled_and_nan_safe(tmp_path: Path) -> None:
    f = np.linspace(-3, 7, 30, dtype=np.float32).reshape(5, 6)
    f[0, 0] = np.nan
    out = read_image(save(tmp_path / "f.tif", f))
    assert out.shape == (5, 6, 1)
    assert out[0, 0, 0] == 0  # NaN becomes the low percentile
    assert out[-1, -1, 0] == 255
    assert (np.diff(out[..., 0].ravel()[1:].astype(int)) >= 0).all()


def test_constant_and_all_nan_arrays() -> None:
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), 7.0)), np.zeros((2, 2), np.uint8))
    with pytest.raises(BiounetError, match="arr.npy: image has no finite pixel values"):
        to_uint8(np.full((2, 2), np.nan), "arr.npy")


@pytest.mark.parametrize(
    ("stored", "invert", "expected"),
    [(MASK * 255, False, MASK), (MASK, False, MASK), (MASK * 255, True, 1 - MASK)],
    ids=["0/255", "0/1", "inverted"],
)
def test_masks(tmp_path: Path, stored: np.ndarray, invert: bool, expected: np.ndarray) -> None:
    for name in ("m.png", "m.tif"):
        out = read_mask(save(tmp_path / name, stored), invert=invert)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)


def test_grey_mask_saved_as_rgb_is_accepted(tmp_path: Path) -> None:
    rgb = np.repeat((MASK * 255)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "m.png", rgb)), MASK)


def test_grey_alpha_mask_is_accepted(tmp_path: Path) -> None:
    """Grey + alpha (mode LA, what GIMP exports) is a grey mask, as an RGBA one with equal channels is."""
    la = np.dstack([MASK * 255, np.full_like(MASK, 255)])
    np.testing.assert_array_equal(read_mask(save(tmp_path / "m.png", la, "LA")), MASK)


def test_colour_mask_is_an_error(tmp_path: Path) -> None:
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = MASK * 255
    path = save(tmp_path / "colour.png", rgb)
    with pytest.raises(BiounetError, match=r"colour\.png: mask is a colour image"):
        read_mask(path)


def test_non_binary_mask_names_file_and_values(tmp_path: Path) -> None:
    path = save(tmp_path / "soft.png", (MASK * 128).astype(np.uint8) + 1)
    with pytest.raises(BiounetError, match=r"soft\.png: mask is not binary \(values \[1, 129\]\)"):
        read_mask(path)
    path = save(tmp_path / "many.png", np.arange(35, dtype=np.uint8).reshape(5, 7))
    with pytest.raises(BiounetError, match=r"many\.png: .*\[0, 1, 2, 3, 4, 5\]\.\.\.") as e:
        read_mask(path)
    assert "label map" not in str(e.value)  # 35 values: a picture, not classes


def test_label_map_mask_gets_a_hint_how_to_split_it(tmp_path: Path) -> None:
    """REFUGE's own masks: 0 cup, 128 disc rim, 255 background in one file."""
    refuge_style = np.full((5, 7), 255, np.uint8)
    refuge_style[1:4, 1:6], refuge_style[2, 3] = 128, 0
    with pytest.raises(BiounetError) as e:
        read_mask(save(tmp_path / "g0001.png", refuge_style))
    msg = str(e.value)
    assert "values [0, 128, 255]" in msg and "3 values look like a label map" in msg
    assert "masks/<label>/<stem>.png" in msg and "import-dataset --format labelmap" in msg


@pytest.mark.parametrize("name", ["empty.png", "empty.tif"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(BiounetError, match=rf"{name}: file is empty \(0 bytes\)"):
        read_image(tmp_path / name)
    with pytest.raises(BiounetError, match=rf"{name}: file is empty"):
        read_mask(tmp_path / name)


@pytest.mark.parametrize("name", ["bad.png", "bad.jpg", "bad.tif"])
def test_corrupt_file(tmp_path: Path, name: str) -> None:
    good = tmp_path / f"good{Path(name).suffix}"
    save(good, RGB)
    (tmp_path / name).write_bytes(good.read_bytes()[:40])  # truncated inside the data
    with pytest.raises(BiounetError, match=rf"{name}: cannot decode"):
        read_image(tmp_path / name)
    (tmp_path / name).write_bytes(b"this is not an image at all")
    with pytest.raises(BiounetError, match=rf"{name}: cannot decode"):
        read_image(tmp_path / name)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match=r"nothere\.png: file not found"):
        read_image(tmp_path / "nothere.png")


def test_save_png_round_trip(tmp_path: Path) -> None:
    save_png(tmp_path / "o.png", RGB)
    save_png(tmp_path / "g.png", GREY)
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), RGB)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), GREY[..., None])


def test_grey_alpha_png_keeps_its_geometry(tmp_path: Path) -> None:
    """A 3-pixel-high grey+alpha image must not be mistaken for a channels-first array."""
    la = np.dstack([GREY[:3], np.full((3, 7), 255, np.uint8)])  # (3, 7, 2)
    np.testing.assert_array_equal(
        read_image(save(tmp_path / "la.png", la, "LA")), GREY[:3, :, None]
    )


# PNG: 8-bit L/LA/RGB/RGBA and 16-bit grey; TIFF: 8/16-bit grey, RGB, RGBA.
FORMATS = [
    ("png", np.uint8, 1), ("png", np.uint8, 2), ("png", np.uint8, 3), ("png", np.uint8, 4),
    ("png", np.uint16, 1),
    ("tif", np.uint8, 1), ("tif", np.uint8, 3), ("tif", np.uint8, 4),
    ("tif", np.uint16, 1), ("tif", np.uint16, 3),
]  # fmt: skip
PNG_MODES = {1: None, 2: "LA", 3: "RGB", 4: "RGBA"}


@st.composite
def images(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    ext, dtype, c = draw(st.sampled_from(FORMATS))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shape = (h, w) if c == 1 else (h, w, c)
    return ext, draw(arrays(dtype, shape))


@settings(max_examples=60, deadline=None)
@given(images())
def test_any_array_reads_back_as_hwc_uint8(case: tuple[str, np.ndarray]) -> None:
    ext, arr = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x.{ext}"
        if ext == "png":
            save(path, arr, PNG_MODES[1 if arr.ndim == 2 else arr.shape[-1]])
        elif arr.ndim == 3:
            save(path, arr, photometric="rgb", extrasamples=["unassalpha"] * (arr.shape[-1] - 3))
        else:
            save(path, arr)
        out = read_image(path)
    assert out.dtype == np.uint8
    assert out.shape[:2] == arr.shape[:2]
    assert out.shape[2] in (1, 3)
    if arr.dtype == np.uint8:  # 8-bit data is kept as is (minus any alpha)
        grey_or_colour = (
            arr[..., None] if arr.ndim == 2 else arr[..., : 1 if arr.shape[-1] < 3 else 3]
        )
        np.testing.assert_array_equal(out, grey_or_colour)


def test_a_float_image_in_0_1_is_the_same_picture_as_its_uint8() -> None:
    """skimage's img_as_float of a uint8 image predicts as the uint8 image does (x 255), not a
    percentile-stretched version of it; floats outside [0, 1] are still stretched."""
    from biounet.data.io import to_uint8

    u = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(u / 255.0), u)
    np.testing.assert_array_equal(to_uint8((u / 255.0).astype(np.float32)), u)
    dim = np.full((4, 4), 0.2)
    dim[0, 0] = 0.3
    assert to_uint8(dim).max() == 77  # 0.3 x 255, not stretched to 255
    assert to_uint8(dim * 10).max() == 255  # [2, 3]: stretched between its percentiles


# What a viewer shows for each EXIF orientation tag (EXIF 2.3, tag 0x0112), written by hand from the
# standard's table (row 0 / column 0 of the stored image is ... side of the shown one), not from
# Pillow: 2 mirrored left-right, 3 turned 180, 4 mirrored top-bottom, 5 transposed, 6 turned 90
# clockwise, 7 transposed across the other diagonal, 8 turned 90 anticlockwise.
SHOWN = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, *range(2, a.ndim)),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, *range(2, a.ndim)),
    8: lambda a: np.rot90(a, 1),
}


def tagged(path: Path, arr: np.ndarray, orientation: int) -> Path:
    """``arr`` stored as is, with an EXIF orientation tag (as a camera or phone writes it)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_show_the_image(tmp_path: Path, orientation: int):
    from biounet.data.io import exif_orientation

    path = tagged(tmp_path / "photo.png", RGB, orientation)
    assert exif_orientation(path) == orientation
    np.testing.assert_array_equal(read_image(path), SHOWN[orientation](RGB))
    mask = tagged(tmp_path / "mask.png", MASK * 255, orientation)
    np.testing.assert_array_equal(read_mask(mask), SHOWN[orientation](MASK))


def test_exif_turned_jpeg_is_read_turned(tmp_path: Path) -> None:
    big = np.zeros((40, 64, 3), np.uint8)
    big[:, :8] = 255  # a bright band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the band at the top
    Image.fromarray(big).save(tmp_path / "p.jpg", quality=95, exif=exif)
    out = read_image(tmp_path / "p.jpg")
    assert out.shape == (64, 40, 3)
    assert out[:6].mean() > 240 and out[12:].mean() < 15


def test_mask_drawn_on_the_stored_pixels_is_a_clear_size_error(tmp_path: Path) -> None:
    from biounet.data.dataset import load_masks
    from biounet.data.folder import Sample

    image = tagged(tmp_path / "eye.png", RGB, 6)  # stored 7x5 (WxH), shown 5x7
    mask = save(tmp_path / "eye_mask.png", MASK * 255)  # drawn on the stored pixels, no tag
    sample = Sample(stem="eye", image=image, masks={"fg": mask})
    with pytest.raises(BiounetError) as e:
        load_masks(sample, ("fg",), (), read_image(image).shape[:2])
    msg = str(e.value)
    assert str(mask) in msg and "7x5" in msg and "5x7" in msg
    assert f"{image} (EXIF orientation 6)" in msg and "as viewers show them" in msg


def test_a_turned_image_with_an_untagged_mask_of_its_size_is_warned_once_per_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 180-degree tag keeps the size: the pair loads, and the log says the mask may not fit
    (once for the folder, however many such images); a tagged mask or an untagged image is quiet."""
    import logging

    from biounet.data.dataset import load_masks
    from biounet.data.folder import Sample
    from biounet.data.io import note_turned_image

    (tmp_path / "a").mkdir()
    turned = [tagged(tmp_path / "a" / f"eye{i}.png", RGB, 3) for i in range(2)]
    mask = save(tmp_path / "m.png", MASK * 255)
    with caplog.at_level(logging.WARNING, logger="biounet.data.io"):
        for image in turned:
            sample = Sample(stem=image.stem, image=image, masks={"fg": mask})
            load_masks(sample, ("fg",), (), read_image(image).shape[:2])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(turned[0]) in said[0] and "(3)" in said[0]
    assert str(mask) in said[0] and "check an overlay" in said[0]
    assert note_turned_image(turned[1], [mask])  # still true, but not said again
    tagged_mask = tagged(tmp_path / "mt.png", MASK * 255, 3)
    plain = save(tmp_path / "plain.png", RGB)
    assert not note_turned_image(turned[0], [tagged_mask])
    assert not note_turned_image(plain, [mask])


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize(
    "exif",
    [b"Exif\x00\x00garbage", b"\x00" * 40,
     # a valid block whose orientation is 9, which EXIF does not define
     b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x09\x00\x00"],
    ids=["garbage", "zeros", "orientation-9"],
)  # fmt: skip
def test_damaged_or_unknown_exif_is_read_as_stored(tmp_path: Path, ext: str, exif: bytes) -> None:
    import warnings

    from biounet.data.io import exif_orientation

    path = tmp_path / f"x{ext}"
    Image.fromarray(RGB).save(path, exif=exif, **({"quality": 100} if ext == ".jpg" else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and quietly: no Pillow warning reaches the user
        assert read_image(path).shape == RGB.shape
        assert exif_orientation(path) == 1


YY, XX = np.mgrid[:64, :96]
DISC = (((YY - 30) ** 2 + (XX - 50) ** 2) < 20**2).astype(np.uint8)  # (64, 96) {0, 1}


def jpeg(path: Path, arr: np.ndarray, quality: int) -> Path:
    Image.fromarray(arr).save(path, quality=quality)
    return path


@pytest.mark.parametrize("quality", [25, 50, 95])
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_mask_is_cut_at_128_back_to_the_drawn_mask(
    tmp_path: Path, quality: int, channels: int
):
    drawn = DISC * 255 if channels == 1 else np.repeat(DISC[..., None] * 255, 3, -1)
    path = jpeg(tmp_path / "m.jpg", drawn, quality)
    stored = np.asarray(Image.open(path))
    assert len(np.unique(stored)) > 2  # the file really holds JPEG's grey edges
    np.testing.assert_array_equal(read_mask(path), DISC)
    np.testing.assert_array_equal(read_mask(path, invert=True), 1 - DISC)


@pytest.mark.parametrize(
    ("arr", "needles"),
    [
        (DISC, ["values only up to 1", "save masks as PNG"]),  # a 0/1 mask: JPEG blurs it away
        (np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1)), ["mid-grey", "not binary"]),
        (np.dstack([DISC * 255, DISC * 0, DISC * 0]), ["colour image"]),  # drawn in red
    ],
    ids=["0-1-mask", "soft-map", "red-drawing"],
)
def test_jpeg_masks_that_are_not_0_255_masks_are_refused(tmp_path: Path, arr, needles) -> None:
    path = jpeg(tmp_path / "m.jpg", arr, 90)
    with pytest.raises(BiounetError) as e:
        read_mask(path)
    assert str(e.value).startswith(str(path))
    for n in needles:
        assert n in str(e.value)


def test_16bit_mask_0_65535_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "m16.png"
    Image.fromarray(DISC.astype(np.uint16) * 65535).save(path)
    np.testing.assert_array_equal(read_mask(path), DISC)
