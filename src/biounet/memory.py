"""Keep freed memory in the process instead of handing it back to the OS after every step.

PyTorch on the CPU allocates each activation with ``malloc``. glibc serves blocks above its mmap
threshold (at most 32 MB) with fresh ``mmap`` pages and unmaps them on ``free``, so every training
step faults in and zeroes its activations again: the kernel time ``top`` shows as "sy". Telling
glibc to serve every block from its heap and not to trim the heap (``mallopt``) lets the next step
reuse the same pages. Measured on the 2-core CPU (bf16, channels-last; ``benchmarks/speed_memory.py``):
classic U-Net training at 512 px, batch 4, 0.43 -> 0.62 img/s, peak RSS 4.0 -> 6.1 GB (freed
blocks are kept, and fragment); small-width training at 256 px, batch 1, 1.01x (+6-12 % in other
runs); prediction 1.17x (classic, 512 px, batch 4; RSS 1.3 -> 1.6 GB) and 1.46x (small, 256 px,
batch 1; RSS unchanged). Any PyTorch program gains from it (MONAI's training above: 1.94x).

The setting is process-wide and lasts for the life of the process (other code in it allocates the
same way). Only Linux with glibc; elsewhere nothing is changed. "auto" turns it on for CPU work
unless activation checkpointing asks for memory over speed.
"""

from __future__ import annotations

import ctypes
import logging
import platform

from biounet.errors import BiounetError

log = logging.getLogger(__name__)

REUSE_MEMORY = ("auto", "on", "off")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_TRIM_BYTES = 1 << 30  # give back only a free gigabyte at the top of the heap
_applied: bool | None = None  # None: not tried yet


def check_reuse_memory(setting: str) -> str:
    """``setting`` when it is one of ``REUSE_MEMORY``, else BiounetError (config, flags, API)."""
    if setting not in REUSE_MEMORY:
        raise BiounetError(f"reuse_memory must be 'auto', 'on' or 'off', got {setting!r}")
    return setting


def wants_reuse(setting: str, device_type: str, checkpointing: str = "off") -> bool:
    """Whether ``setting`` ("auto", "on", "off") keeps freed memory for work on ``device_type``
    ("cpu", "cuda"; CUDA memory has its own caching allocator, host memory is left alone)."""
    check_reuse_memory(setting)
    if device_type != "cpu" or setting == "off":
        return False
    return setting == "on" or checkpointing == "off"


def keep_freed_memory() -> bool:
    """glibc: every allocation from the heap (no mmap) and no trimming of the heap. True when in
    effect, False where the C library is not glibc; tried once per process (``libc_ver`` reads
    the interpreter's binary), the answer kept."""
    global _applied
    if _applied is None:
        _applied = _set_mallopt()
    return _applied


def _set_mallopt() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    except (OSError, AttributeError):
        return False
    if ok:
        log.debug("malloc: freed memory kept for reuse (no mmap, heap trimmed above 1 GiB)")
    return ok


def reuse_memory(setting: str, device_type: str, checkpointing: str = "off") -> bool:
    """``keep_freed_memory()`` where ``wants_reuse`` says so; True when in effect."""
    return wants_reuse(setting, device_type, checkpointing) and keep_freed_memory()
