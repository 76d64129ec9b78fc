"""ONNX export and the ONNX Runtime backend: outputs match PyTorch fp32 within 1e-4 (logits and
probabilities), for any input size; skipped where onnx/onnxruntime are not installed (CI installs
only the dev extra)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from biounet.checkpoint import load_any, load_checkpoint, save_checkpoint, save_pipeline
from biounet.cli import main
from biounet.config import ModelConfig
from biounet.errors import BiounetError
from biounet.infer import preprocess_spec
from biounet.models import build_model
from biounet.predictor import ModelPredictor, PredictOptions, make_predictor

ATOL = 1e-4  # fp32 in both; differences come from BN folding and kernel summation order
CFG = ModelConfig(in_channels=3, out_channels=2, base_width=4, depth=3)
LABELS = ("disc", "cup")


def has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_onnx = pytest.mark.skipif(not has("onnx"), reason="onnx not installed (extra 'onnx')")
needs_ort = pytest.mark.skipif(
    not has("onnxruntime"), reason="onnxruntime not installed (extra 'onnx')"
)


def saved(path: Path, seed: int = 0, cfg: ModelConfig = CFG) -> Path:
    """A checkpoint whose BN statistics are not the defaults."""
    torch.manual_seed(seed)
    model = build_model(cfg).train()
    with torch.no_grad():
        model(torch.randn(4, cfg.in_channels, 32, 32) * 3 + 1)
    save_checkpoint(path, model.eval(), cfg, LABELS, preprocess_spec(32, cfg.in_channels))
    return path


@needs_ort
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 37, 50), (1, 3, 8, 100)])
def test_ort_logits_match_pytorch_for_any_size(tmp_path: Path, shape: tuple[int, ...]) -> None:
    from biounet.export import ort_model

    ck = load_checkpoint(saved(tmp_path / "m.pt"))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ck.build()(x)
    out = ort_model(ck)(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL)


@needs_onnx
@needs_ort
def test_export_cli_writes_a_self_describing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    from biounet.export import OrtModel

    ckpt = saved(tmp_path / "m.pt")
    out = tmp_path / "out" / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    info = json.loads(meta["biounet"])
    assert info["labels"] == list(LABELS)
    assert info["model_config"]["base_width"] == 4
    assert info["preprocess"]["image_size"] == 32
    ck = load_checkpoint(ckpt)
    x = torch.randn(3, 3, 45, 29, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(OrtModel(out)(x), ck.build()(x), rtol=0, atol=ATOL)


@needs_onnx
def test_export_of_a_fundus_pipeline_writes_one_file_per_model(tmp_path: Path) -> None:
    pipe = tmp_path / "fundus.pt"
    parts = {"locator": saved(tmp_path / "l.pt", 0), "roi": saved(tmp_path / "r.pt", 1)}
    save_pipeline(pipe, parts, {})
    assert main(["export", "--checkpoint", str(pipe), "--out", str(tmp_path / "f.onnx")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["f_locator.onnx", "f_roi.onnx"]


@needs_onnx
def test_export_of_an_ensemble_writes_one_file_per_member(tmp_path: Path) -> None:
    from biounet.checkpoint import save_model_ensemble

    members = [saved(tmp_path / "a.pt", 0), saved(tmp_path / "b.pt", 1)]
    ens = save_model_ensemble(members, tmp_path / "ens.pt")
    assert main(["export", "--checkpoint", str(ens), "--out", str(tmp_path / "e.onnx")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["e_member0.onnx", "e_member1.onnx"]


@needs_ort
def test_ensemble_backend_ort_matches_torch_fp32(tmp_path: Path) -> None:
    from biounet.checkpoint import save_model_ensemble

    ens = save_model_ensemble(
        [saved(tmp_path / "a.pt", 0), saved(tmp_path / "b.pt", 1)], tmp_path / "ens.pt"
    )
    img = np.random.default_rng(2).integers(0, 256, (50, 61, 3), dtype=np.uint8)
    ort = make_predictor(ens, PredictOptions(backend="ort")).predict(img)
    ref = make_predictor(ens, PredictOptions("fp32", fast=False)).predict(img)
    np.testing.assert_allclose(ort.prob, ref.prob, rtol=0, atol=ATOL)


@needs_ort
def test_predict_backend_ort_matches_torch_fp32(tmp_path: Path) -> None:
    ck = load_checkpoint(saved(tmp_path / "m.pt"))
    img = np.random.default_rng(0).integers(0, 256, (50, 61, 3), dtype=np.uint8)
    ort = ModelPredictor(ck, "auto", backend="ort").predict(img)
    ref = ModelPredictor(ck, "fp32", fast=False).predict(img)
    np.testing.assert_allclose(ort.prob, ref.prob, rtol=0, atol=ATOL)


@needs_ort
def test_pipeline_predictor_backend_ort_matches_torch_fp32(tmp_path: Path) -> None:
    pipe = tmp_path / "fundus.pt"
    parts = {"locator": saved(tmp_path / "l.pt", 0), "roi": saved(tmp_path / "r.pt", 1)}
    save_pipeline(pipe, parts, {})
    img = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    ort = make_predictor(pipe, PredictOptions(backend="ort")).predict(img)
    ref = make_predictor(pipe, PredictOptions("fp32", fast=False)).predict(img)
    np.testing.assert_allclose(ort.prob, ref.prob, rtol=0, atol=ATOL)


def test_missing_onnxruntime_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    ck = load_any(saved(tmp_path / "m.pt"))
    with pytest.raises(BiounetError, match=r"pip install 'biounet\[onnx\]'"):
        ModelPredictor(ck, backend="ort")


def test_missing_onnx_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    ckpt = saved(tmp_path / "m.pt")
    with pytest.raises(BiounetError, match=r"needs the 'onnx' package"):
        from biounet.export import export_checkpoint

        export_checkpoint(ckpt, tmp_path / "m.onnx")


def test_bf16_with_ort_and_unknown_backend_are_errors(tmp_path: Path) -> None:
    ck = load_any(saved(tmp_path / "m.pt"))
    with pytest.raises(BiounetError, match="bf16 is not available with --backend ort"):
        ModelPredictor(ck, "bf16", backend="ort")
    with pytest.raises(BiounetError, match="backend must be one of torch, ort, got 'trt'"):
        ModelPredictor(ck, backend="trt")
