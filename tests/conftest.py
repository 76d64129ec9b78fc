"""Shared fixtures: a tiny synthetic fundus dataset and the location of the real datasets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biounet.data.synthetic import write_synthetic_dataset

# The tests run tiny tensors, where intra-op threads cost more in synchronisation than they save;
# on a 2-core machine that is busy with other work, 2 threads made the suite ~7x slower than 1.
torch.set_num_threads(1)

# The real datasets live next to the repository (never inside it): <repo>/../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The tiny dataset's geometry; tests check output sizes against these.
N_TRAIN, N_TEST, H, W = 6, 3, 64, 72


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/synth_000..008.png (72x64 RGB), masks/{disc,cup}/, splits.json with 6 train and 3 test."""
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synth"), n_train=N_TRAIN, n_test=N_TEST, h=H, w=W
    )


@pytest.fixture(scope="session")
def real_dataset() -> Callable[[str], Path]:
    """``real_dataset("drishti_gs1")`` -> the folder, or skip the test when it is not on this machine."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(f"{path} not found: real-data test skipped")
        return path

    return get


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Write a uint8 array (H, W) or (H, W, C) as PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
    return path


@pytest.fixture
def png() -> Callable[[Path, np.ndarray], Path]:
    return write_png


@pytest.fixture(scope="session")
def tiny_fundus() -> Callable[..., object]:
    """``tiny_fundus(data_root, **fields)`` -> a FundusConfig of the smallest run that still trains
    both stages (32 px, one epoch each, fp32): for end-to-end pipeline tests."""
    from biounet.fundus.pipeline import FundusConfig

    def make(data_root: Path | str, **fields: object) -> FundusConfig:
        small = dict(locator_size=32, locator_epochs=1, roi_size=32, roi_epochs=1, batch_size=4)
        return FundusConfig(data_root=str(data_root), precision="fp32", **{**small, **fields})

    return make


@pytest.fixture(scope="session")
def disc_cup_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, seeded disc + cup U-Net (base width 4, depth 2, 32 px) saved as a
    checkpoint: for tests of predict and thresholds that need a model, not a good one."""
    from biounet.checkpoint import save_checkpoint
    from biounet.config import ModelConfig
    from biounet.infer import preprocess_spec
    from biounet.models import build_model

    cfg = ModelConfig(in_channels=3, out_channels=2, base_width=4, depth=2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "disc_cup.pt"
    save_checkpoint(path, build_model(cfg), cfg, ("disc", "cup"), preprocess_spec(32, 3))
    return path
