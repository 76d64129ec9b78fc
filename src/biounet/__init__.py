"""biounet: U-Net segmentation for biomedical images."""

from __future__ import annotations

__version__ = "0.1.0"
