"""biounet.memory: when freed memory is kept for reuse, and the switch on the train config."""

from __future__ import annotations

import platform

import pytest

from biounet.config import TrainConfig
from biounet.errors import BiounetError
from biounet.memory import keep_freed_memory, wants_reuse


@pytest.mark.parametrize(
    ("setting", "device", "checkpointing", "expected"),
    [
        ("auto", "cpu", "off", True),
        ("auto", "cpu", "top", False),  # checkpointing asks for memory over speed
        ("auto", "cuda", "off", False),  # CUDA has its own caching allocator
        ("on", "cpu", "all", True),
        ("on", "cuda", "off", False),
        ("off", "cpu", "off", False),
    ],
)
def test_when_freed_memory_is_kept(
    setting: str, device: str, checkpointing: str, expected: bool
) -> None:
    assert wants_reuse(setting, device, checkpointing) is expected


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(BiounetError, match="reuse_memory must be 'auto', 'on' or 'off'"):
        wants_reuse("yes", "cpu")
    with pytest.raises(BiounetError, match="reuse_memory must be 'auto', 'on' or 'off'"):
        TrainConfig(reuse_memory="always")


def test_glibc_takes_the_setting() -> None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's: elsewhere nothing is changed")
    assert keep_freed_memory() and keep_freed_memory()  # idempotent


def test_train_flag_reaches_the_config(tmp_path) -> None:
    from biounet.cli import parser
    from biounet.cli_commands import build_run_config

    a = parser().parse_args(
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--reuse-memory", "off"]
    )
    assert build_run_config(a).train.reuse_memory == "off"


def test_predictor_refuses_an_unknown_setting_before_reading_the_checkpoint(tmp_path) -> None:
    from biounet.predictor import PredictOptions, make_predictor

    with pytest.raises(BiounetError, match="reuse_memory must be"):  # not "not found"
        make_predictor(tmp_path / "missing.pt", PredictOptions(reuse_memory="always"))
