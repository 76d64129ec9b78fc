"""The Python API: the quickstart example end to end, load_model/predict on arrays and paths, fit
and evaluate from notebooks, and a light ``import biounet``."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import biounet
from biounet.api import as_image, run_config
from biounet.config import RunConfig
from biounet.data.io import read_image
from biounet.errors import BiounetError
from biounet.predictor import make_predictor

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    main = runpy.run_path(str(EXAMPLE), run_name="quickstart")["main"]
    return main(tmp_path_factory.mktemp("quickstart"))


def test_quickstart_trains_evaluates_and_predicts(
    quickstart: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run, summary = quickstart["run"], quickstart["summary"]
    names = {p.name for p in run.iterdir()}
    assert {"best.pt", "metrics.csv", "curves.png", "config.yaml", "report.html"} <= names
    assert summary["n_images"] == 3 and summary["split"] == "test"
    assert set(summary["labels"]) == {"disc", "cup"}
    assert (run.parent / "eval" / "report.html").is_file()
    result = quickstart["result"]
    assert result.prob.shape == (2, 64, 72) and result.prob.dtype == np.float32
    assert {k: (v.shape, v.dtype) for k, v in result.masks.items()} == {
        "disc": ((64, 72), np.dtype(bool)),
        "cup": ((64, 72), np.dtype(bool)),
    }
    assert "vcdr" in result.measures  # disc + cup: clinical measures come along


def test_predict_equals_the_cli_predictor(quickstart: dict[str, Any]) -> None:
    run, model = quickstart["run"], quickstart["model"]
    path = run.parent / "data" / "images" / "synth_009.png"
    ref = make_predictor(run / "best.pt").predict(read_image(path))
    for image in (path, str(path), read_image(path)):
        got = model.predict(image)
        np.testing.assert_array_equal(got.prob, ref.prob)
        assert all(np.array_equal(got.masks[k], ref.masks[k]) for k in ref.masks)


@pytest.mark.parametrize("tta", [False, True])
def test_predict_many_yields_what_predict_gives_in_order(
    quickstart: dict[str, Any], tta: bool
) -> None:
    run = quickstart["run"]
    model = biounet.load_model(run / "best.pt", tta=tta)
    paths = sorted((run.parent / "data" / "images").glob("*.png"))[:4]
    rng = np.random.default_rng(0)
    images: list[Any] = [*paths, (rng.random((40, 31, 3)) * 255).astype(np.uint8)]
    got = list(model.predict_many(iter(images), batch_size=2))  # 2 + 2 + 1: a short last batch
    assert len(got) == 5
    for image, g in zip(images, got, strict=True):
        ref = model.predict(image)
        assert g.prob.shape == ref.prob.shape  # each at its own size
        # identical here; batched kernels may round differently on other CPUs
        np.testing.assert_allclose(g.prob, ref.prob, atol=1e-3)
        assert set(g.measures) == set(ref.measures)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_model_predicts_what_the_eager_one_does(quickstart: dict[str, Any]) -> None:
    run = quickstart["run"]
    path = run.parent / "data" / "images" / "synth_009.png"
    eager = biounet.load_model(run / "best.pt").predict(path)
    compiled = biounet.load_model(run / "best.pt", compile=True).predict(path)
    np.testing.assert_allclose(compiled.prob, eager.prob, atol=2e-2)  # bf16 kernels may differ
    assert all(np.mean(compiled.masks[k] == eager.masks[k]) > 0.99 for k in eager.masks)


def test_predict_many_names_the_bad_array_and_checks_the_batch_size(
    quickstart: dict[str, Any],
) -> None:
    model = quickstart["model"]
    good = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images\[1\]: image: expected an array"):
        list(model.predict_many([good, np.zeros((2, 2, 2, 2))]))
    with pytest.raises(ValueError, match="batch_size"):
        list(model.predict_many([good], batch_size=0))


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((37, 53), np.uint8),
        ((37, 53), np.uint16),
        ((37, 53, 1), np.float32),
        ((40, 31, 3), np.uint16),
        ((40, 31, 4), np.uint8),
        ((40, 31, 3), np.float64),
        ((30, 30, 2), np.uint8),
    ],
)
def test_predict_returns_the_input_size(
    quickstart: dict[str, Any], shape: tuple[int, ...], dtype: type
) -> None:
    arr = (np.random.default_rng(1).random(shape) * (255 if dtype == np.uint8 else 4000)).astype(
        dtype
    )
    r = quickstart["model"].predict(arr)
    assert r.prob.shape == (2, *shape[:2])
    assert ((r.prob >= 0) & (r.prob <= 1)).all()
    assert all(m.shape == shape[:2] and m.dtype == bool for m in r.masks.values())


def test_arrays_are_prepared_like_files(tmp_path: Path) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    np.testing.assert_array_equal(as_image(rgba), rgba[..., :3])
    grey16 = np.arange(63, dtype=np.uint16).reshape(9, 7) * 1000
    from PIL import Image

    Image.fromarray(grey16).save(tmp_path / "g.png")
    np.testing.assert_array_equal(as_image(grey16), read_image(tmp_path / "g.png"))


@pytest.mark.parametrize("shape", [(4, 5, 6), (2, 4, 5, 3), (7,), (0, 5)])
def test_bad_image_shapes_name_the_argument(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"image: expected an array \(H, W\) or \(H, W, C\)"):
        as_image(np.zeros(shape, dtype=np.uint8))


def test_a_channels_first_array_gets_a_hint() -> None:
    with pytest.raises(ValueError, match=r"channels first\? np.moveaxis\(image, 0, -1\)"):
        as_image(np.zeros((3, 20, 30), dtype=np.uint8))


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match="checkpoint not found"):
        biounet.load_model(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="threshold: must be in"):
        biounet.load_model(tmp_path / "nope.pt", threshold=1.5)


def test_run_config_from_dict_yaml_and_object(quickstart: dict[str, Any]) -> None:
    cfg = run_config({"data": {"root": Path("/x"), "labels": ["disc"]}, "preset": "medium"})
    assert cfg.data.root == "/x" and cfg.data.labels == ("disc",)
    # no "model" part: the preset's network, input channels from the images
    assert (cfg.model.base_width, cfg.model.in_channels) == (32, 0)
    saved = run_config(quickstart["run"] / "config.yaml")
    assert saved.train.epochs == 2 and saved.data.image_size == 64
    assert run_config(saved) is saved
    with pytest.raises(BiounetError, match="unknown TrainConfig keys"):
        run_config({"train": {"epoch": 3}})
    with pytest.raises(BiounetError, match="data.root"):
        biounet.fit(RunConfig())


def test_evaluate_is_callable_before_and_after_the_module_import(
    quickstart: dict[str, Any], tmp_path: Path
) -> None:
    import biounet.evaluate as module

    assert biounet.evaluate is module and callable(module)
    run = quickstart["run"]
    s = biounet.evaluate(run / "best.pt", run.parent / "data", "test", tmp_path / "e")
    ref = quickstart["summary"]["labels"]
    assert {lb: m["dice_mean"] for lb, m in s["labels"].items()} == {
        lb: m["dice_mean"] for lb, m in ref.items()
    }
    assert {p.name for p in (tmp_path / "e").iterdir()} >= {"report.html", "per_image.csv", "cases"}


def test_import_biounet_is_light() -> None:
    code = "import sys, biounet; assert 'torch' not in sys.modules; print(biounet.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == biounet.__version__
    assert {"load_model", "fit", "evaluate"} <= set(dir(biounet))


def test_api_review_mends(tmp_path: Path, synthetic_data: Path) -> None:
    """fit refuses a folder holding a run unless overwrite; config values of the wrong type and
    misspelled sections stop with the key named; a text file is no checkpoint; a read-only array
    (np.asarray of a PIL image) predicts without a warning."""
    import warnings

    from PIL import Image

    import biounet
    from biounet.errors import BiounetError

    cfg = {"data": {"root": synthetic_data, "image_size": 32}, "train": {"epochs": 1}}
    run = biounet.fit(cfg, tmp_path / "r")
    with pytest.raises(BiounetError, match="holds a run already .*overwrite=True"):
        biounet.fit(cfg, tmp_path / "r")
    assert biounet.fit(cfg, tmp_path / "r", overwrite=True) == run
    for bad, needle in (
        ({**cfg, "train": {"epochs": "one"}}, "TrainConfig.epochs: expected int, got 'one'"),
        ({**cfg, "trian": {"epochs": 1}}, r"unknown config sections \['trian'\]"),
    ):
        with pytest.raises(BiounetError, match=needle):
            biounet.fit(bad, tmp_path / "r2")
    (tmp_path / "hello.pt").write_text("hello")
    with pytest.raises(BiounetError, match="hello.pt: not a readable checkpoint"):
        biounet.load_model(tmp_path / "hello.pt")
    m = biounet.load_model(run / "best.pt")
    img = next((synthetic_data / "images").iterdir())
    arr = np.asarray(Image.open(img))
    assert not arr.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.predict(arr).prob.shape[1:] == arr.shape[:2]


def test_biounet_evaluate_shows_the_api_functions_signature() -> None:
    import inspect

    from biounet.api import evaluate

    assert inspect.signature(biounet.evaluate) == inspect.signature(evaluate)
    assert "biounet.api.evaluate" in biounet.evaluate.__doc__


def test_a_dict_takes_the_presets_recipe_as_the_cli_does() -> None:
    from biounet.cli import parser
    from biounet.cli_commands import build_run_config

    seed = run_config({"data": {"root": "d", "labels": ["disc"]}, "preset": "seed"})
    t = seed.train  # the article's: Adam 1e-4, StepLR(10, 0.1), 50 epochs, batch 4, 224 px
    assert (t.lr, t.lr_step, t.lr_gamma, t.lr_schedule, t.epochs, t.batch_size) == (
        1e-4, 10, 0.1, "step", 50, 4
    )  # fmt: skip
    assert seed.data.image_size == 224
    cli = build_run_config(
        parser().parse_args(["train", "--data", "d", "--labels", "disc", "--preset", "seed"])
    )
    assert (cli.train, cli.data.image_size) == (seed.train, seed.data.image_size)
    # values given win; the schedule follows a step given
    small = run_config(
        {"data": {"root": "d", "image_size": 96}, "train": {"batch_size": 2, "lr_step": 5},
         "preset": "small"}
    )  # fmt: skip
    t = small.train
    assert (t.batch_size, t.lr, t.epochs, t.lr_step, t.lr_schedule) == (2, 2e-3, 60, 5, "step")
    assert small.data.image_size == 96
