"""Checkpoints: a self-describing round trip, and refusal of anything that is not one."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import torch

from biounet.checkpoint import FORMAT, PIPELINE_FORMAT, load_checkpoint, save_checkpoint
from biounet.config import ModelConfig
from biounet.errors import BiounetError
from biounet.infer import preprocess_spec
from biounet.models import build_model

CFG = ModelConfig(in_channels=3, out_channels=2, base_width=4, depth=2, up_mode="nearest_conv")
LABELS = ("disc", "cup")


class MarkerPayload:
    """Unpickling this runs a shell command that creates ``marker``: what a hostile file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def trained_model() -> torch.nn.Module:
    """A model whose weights and BatchNorm running statistics differ from a fresh one."""
    torch.manual_seed(0)
    model = build_model(CFG).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 16, 16)).mean().backward()
    opt.step()
    return model.eval()


def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    prep = preprocess_spec(64, 3)
    save_checkpoint(path, trained_model(), CFG, LABELS, prep, {"epoch": 3, "metrics": {"d": 0.5}})
    return path


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    path = saved(tmp_path)
    ck = load_checkpoint(path)
    assert ck.model_config == CFG
    assert ck.labels == LABELS
    assert ck.preprocess == {
        "image_size": 64, "in_channels": 3,
        "resize": "pad_to_square_centred", "normalize": "per_image_channel_zscore",
    }  # fmt: skip
    assert ck.extra == {"epoch": 3, "metrics": {"d": 0.5}}
    model = ck.build()
    assert not model.training  # build() returns a model ready to run
    x = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    reference = trained_model()
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
        # and the weights are not just those of a fresh model
        assert not torch.allclose(build_model(CFG).eval()(x), expected)


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = saved(tmp_path)
    save_checkpoint(path, trained_model(), CFG, LABELS, {}, None)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert load_checkpoint(path).extra == {}


def test_plain_torch_load_with_weights_only_reads_it(tmp_path: Path) -> None:
    payload = torch.load(saved(tmp_path), weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["labels"] == list(LABELS)
    assert payload["model_config"]["up_mode"] == "nearest_conv"


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "x": MarkerPayload(marker)}, path)
    with pytest.raises(BiounetError, match=r"evil\.pt: refused: .*could run code"):
        load_checkpoint(path)
    assert not marker.exists()
    # the control: loading the same file the unsafe way does run the code
    control = tmp_path / "control"
    torch.save(MarkerPayload(control), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def test_truncated_file(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BiounetError, match=r"model\.pt: not a readable checkpoint \(truncated"):
        load_checkpoint(path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                     .to(torch.uint8).numpy().tobytes())  # fmt: skip
    with pytest.raises(BiounetError, match=r"noise\.pt: "):
        load_checkpoint(path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BiounetError, match=r"empty\.pt: "):
        load_checkpoint(tmp_path / "empty.pt")


@pytest.mark.parametrize("obj", [{"state_dict": {}}, [1, 2, 3], {"format": "other-tool"}])
def test_other_torch_files_are_not_biounet_checkpoints(tmp_path: Path, obj: object) -> None:
    torch.save(obj, tmp_path / "other.pt")
    with pytest.raises(BiounetError, match=r"other\.pt: not a biounet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_newer_format_version_is_named(tmp_path: Path) -> None:
    torch.save(
        {"format": FORMAT, "format_version": 99, "biounet_version": "9.0"}, tmp_path / "new.pt"
    )
    with pytest.raises(BiounetError, match=r"new\.pt: checkpoint format 99 \(biounet 9\.0\)"):
        load_checkpoint(tmp_path / "new.pt")


def test_pipeline_file_is_not_a_single_model(tmp_path: Path) -> None:
    torch.save({"format": PIPELINE_FORMAT, "format_version": 1, "parts": {}}, tmp_path / "f.pt")
    with pytest.raises(
        BiounetError, match=r"f\.pt: a fundus pipeline checkpoint, not a single model"
    ):
        load_checkpoint(tmp_path / "f.pt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match=r"absent\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_incomplete_checkpoint_is_a_biounet_error(tmp_path: Path) -> None:
    """Right header, missing parts (a hand-edited or partly converted file): a user error, not a KeyError."""
    path = tmp_path / "partial.pt"
    torch.save({"format": FORMAT, "format_version": 1, "labels": ["disc"]}, path)
    with pytest.raises(BiounetError, match=r"partial\.pt"):
        load_checkpoint(path)


def test_unknown_model_config_key_is_named(tmp_path: Path) -> None:
    path = saved(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["dropout"] = 0.1
    torch.save(payload, path)
    with pytest.raises(BiounetError, match=r"unknown ModelConfig keys \['dropout'\]"):
        load_checkpoint(path)
