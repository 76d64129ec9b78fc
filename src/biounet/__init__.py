"""biounet: U-Net segmentation for biomedical images.

The Python API (``load_model``, ``fit``, ``evaluate``; see ``biounet.api``) is imported on first
use, so ``import biounet`` stays light (no torch until a model is needed).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load_model", "fit", "Model", "Prediction")


def __getattr__(name: str) -> Any:
    if name in _API:
        from biounet import api

        return getattr(api, name)
    if name == "evaluate":
        # The package attribute `evaluate` is the submodule biounet.evaluate as soon as anything imports
        # it; that module is callable (see the end of evaluate.py), so both uses meet in one object.
        import biounet.evaluate

        return biounet.evaluate
    raise AttributeError(f"module 'biounet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "evaluate"])
