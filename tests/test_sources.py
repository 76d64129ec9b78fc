"""Several datasets in one training run: the dataset-list file, per-source splits, weighted draws,
and the fundus pipeline trained on two datasets of different image sizes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from biounet.config import DataConfig, RunConfig, TrainConfig
from biounet.data.sources import batch_order, draw_order, is_spec, read_spec
from biounet.data.synthetic import write_synthetic_dataset
from biounet.errors import BiounetError
from biounet.train_data import split_samples


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a/ (10 train, 64x72 px) and b/ (5 train, 96x80 px) and both.yaml weighting them 1 : 3."""
    root = tmp_path_factory.mktemp("two")
    write_synthetic_dataset(root / "a", n_train=10, n_test=2, h=64, w=72, prefix="a")
    write_synthetic_dataset(root / "b", n_train=5, n_test=2, h=96, w=80, seed=1, prefix="b")
    (root / "both.yaml").write_text(
        "datasets:\n  - root: a\n    weight: 1\n  - root: b\n    weight: 3\n"
    )
    return root


def test_spec_roots_are_relative_to_the_file(two_sets: Path) -> None:
    src = read_spec(two_sets / "both.yaml")
    assert [s.root for s in src] == [two_sets / "a", two_sets / "b"]
    assert [s.weight for s in src] == [1.0, 3.0] and {s.split for s in src} == {"train"}
    assert is_spec(two_sets / "both.yaml") and not is_spec(two_sets / "a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datasets: []\n", "non-empty 'datasets:' list"),
        ("- a\n", "non-empty 'datasets:' list"),
        ("datasets:\n  - root: a\n    weight: 0\n", "weight must be a number > 0"),
        ("datasets:\n  - root: a\n    weight: yes\n", "weight must be a number > 0"),
        ("datasets:\n  - root: a\n    wieght: 2\n", "unknown keys ['wieght']"),
        ("datasets:\n  - root: nowhere\n", "dataset folder"),
        ("datasets:\n  - {weight: 1}\n", "needs a 'root' folder"),
        ("datasets: [a\n", "not a valid dataset list"),
    ],
)
def test_bad_spec_names_the_file_and_the_entry(
    two_sets: Path, tmp_path: Path, text: str, message: str
) -> None:
    p = two_sets / f"bad_{abs(hash(text))}.yaml"
    p.write_text(text)
    with pytest.raises(BiounetError, match="bad_") as e:
        read_spec(p)
    assert message in str(e.value)


def test_split_holds_out_validation_per_source_and_weights_per_image(two_sets: Path) -> None:
    cfg = RunConfig(
        data=DataConfig(root=str(two_sets / "both.yaml"), val_fraction=0.2),
        train=TrainConfig(seed=0),
    )
    tr, val, labels = split_samples(cfg)
    assert labels == ("cup", "disc")
    assert Counter(s.stem[0] for s in val) == {"a": 2, "b": 1}  # 20 % of 10 and of 5
    assert Counter(s.stem[0] for s in tr) == {"a": 8, "b": 4}
    w = {s.stem[0]: s.weight for s in tr}
    # source share = weight / sum of weights, whatever the source's size
    assert w["a"] * 8 == pytest.approx(1.0) and w["b"] * 4 == pytest.approx(3.0)


def test_no_holdout_over_a_dataset_list_trains_on_every_image(two_sets: Path) -> None:
    """val_fraction 0 with several sources: all 15 images train; no stem counts as duplicated
    because each source's stand-in validation image is one of its own training images."""
    from biounet.train_data import holds_out

    cfg = RunConfig(
        data=DataConfig(root=str(two_sets / "both.yaml"), val_fraction=0.0),
        train=TrainConfig(seed=0),
    )
    tr, val, _ = split_samples(cfg)
    assert Counter(s.stem[0] for s in tr) == {"a": 10, "b": 5}
    assert {s.image for s in val} <= {s.image for s in tr} and not holds_out(tr, val)


def test_a_stem_in_two_sources_is_an_error(two_sets: Path) -> None:
    p = two_sets / "twice.yaml"
    p.write_text("datasets:\n  - a\n  - a\n")
    with pytest.raises(BiounetError, match="occur in several datasets"):
        split_samples(RunConfig(data=DataConfig(root=str(p))))


def test_draw_order_is_a_permutation_without_weights_and_follows_weights() -> None:
    from biounet.data.dataset import sample_weights
    from biounet.data.folder import Sample

    g = torch.Generator().manual_seed(0)
    order = draw_order(None, 7, g)
    assert sorted(order.tolist()) == list(range(7))
    same = [Sample(f"s{i}", Path(f"s{i}.png"), weight=0.25) for i in range(4)]
    assert sample_weights(same) is None  # equal weights draw as a permutation
    w = sample_weights([*same[:3], Sample("x", Path("x.png"), weight=0.75)])
    assert w is not None and w.tolist() == [0.25, 0.25, 0.25, 0.75]
    draws = torch.cat([draw_order(w, 4, g) for _ in range(2000)])
    assert len(draws) == 8000
    assert (draws == 3).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_batch_order_never_ends_on_a_batch_of_one() -> None:
    g = torch.Generator().manual_seed(0)
    assert len(batch_order(None, 9, 4, g)) == 8  # 4 + 4 + 1: the lone last image is left out
    assert len(batch_order(None, 10, 4, g)) == 10  # 4 + 4 + 2
    assert len(batch_order(None, 3, 4, g)) == 3  # one batch of three
    assert len(batch_order(torch.ones(5), 5, 2, g)) == 4  # weighted draws too
    twice = batch_order(None, 5, 4, g, repeats=2)  # patch training: each image twice, 4 + 4 + 2
    assert len(twice) == 10 and sorted(twice.tolist()) == sorted(list(range(5)) * 2)
    assert len(batch_order(None, 3, 2, g, repeats=3)) == 8  # 9 = 2 * 4 + 1: the lone one left out


def test_fundus_pipeline_trains_on_two_datasets_of_different_sizes(
    two_sets: Path, tiny_fundus, tmp_path: Path
) -> None:
    import numpy as np

    from biounet.checkpoint import load_any
    from biounet.data.io import read_image
    from biounet.fundus.pipeline import FundusPredictor, fit_fundus

    fc = tiny_fundus(two_sets / "both.yaml", camera_augment=True, colour_augment=True)
    ck = fit_fundus(fc, tmp_path / "run")
    pred = FundusPredictor(load_any(ck), precision="fp32")
    for name in ("a/images/a_010.png", "b/images/b_005.png"):
        img = read_image(two_sets / name)
        r = pred.predict(img)
        assert r.masks["disc"].shape == img.shape[:2]
        assert np.isfinite(r.prob).all()


def test_a_grey_fundus_pipeline_trains_on_luminance_and_reads_colour_photographs(
    two_sets: Path, tiny_fundus, tmp_path: Path
) -> None:
    from biounet.checkpoint import load_any
    from biounet.data.io import read_image
    from biounet.fundus.pipeline import FundusPredictor, fit_fundus, stage_configs

    fc = tiny_fundus(two_sets / "a", grey=True, colour_augment=True)
    assert [c.model.in_channels for c in stage_configs(fc)] == [1, 1]
    ck = load_any(fit_fundus(fc, tmp_path / "run"))
    assert ck.parts["locator"].preprocess["in_channels"] == 1
    assert ck.parts["roi"].preprocess["in_channels"] == 1
    img = read_image(two_sets / "a/images/a_010.png")
    assert img.shape[-1] == 3  # an RGB photograph, converted to luminance by predict
    r = FundusPredictor(ck, precision="fp32").predict(img)
    assert r.masks["disc"].shape == img.shape[:2] and r.prob.shape[0] == 2


def test_an_rgb_fundus_pipeline_on_grey_photographs_repeats_their_channel(
    two_sets: Path, tiny_fundus, tmp_path: Path
) -> None:
    """``--in-channels 3`` on grey images: both stages get 3 channels (the grey one repeated),
    as the plain pipeline does, instead of silently training on one."""
    import shutil

    import numpy as np
    from PIL import Image

    from biounet.checkpoint import load_any
    from biounet.data.io import read_image
    from biounet.errors import BiounetError
    from biounet.fundus.pipeline import FundusConfig, FundusPredictor, fit_fundus, stage_configs

    grey = tmp_path / "grey"
    shutil.copytree(two_sets / "a", grey)
    for p in (grey / "images").iterdir():
        Image.open(p).convert("L").save(p)
    fc = tiny_fundus(grey, in_channels=3)
    assert [c.model.in_channels for c in stage_configs(fc)] == [3, 3]
    ck = load_any(fit_fundus(fc, tmp_path / "run"))
    assert ck.parts["roi"].preprocess["in_channels"] == 3
    img = read_image(grey / "images" / "a_010.png")
    assert img.shape[-1] == 1
    r = FundusPredictor(ck, precision="fp32").predict(img)
    assert r.masks["disc"].shape == img.shape[:2] and np.isfinite(r.prob).all()
    for bad in ({"in_channels": 2}, {"in_channels": 3, "grey": True}):
        with pytest.raises(BiounetError, match="in_channels"):
            FundusConfig(**bad)
