"""Shared helpers for the benchmark scripts: dataset views (symlinks, never copies of the data),
machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from biounet.data.folder import mask_files

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def require(path: Path) -> Path:
    if not path.is_dir():
        raise SystemExit(
            f"{path} not found: this benchmark needs the real dataset there; nothing was run"
        )
    return path


def make_view(
    root: Path,
    out: Path,
    splits: dict[str, list[str]],
    labels: tuple[str, ...],
    mask_dir: dict[str, Path] | None = None,
) -> Path:
    """A dataset folder at ``out`` whose images and masks are symlinks into ``root`` (or into the
    folders of ``mask_dir`` for relabelled masks), with its own splits.json. Masks are found as
    ``discover`` finds them (any mask extension, or the stem plus one shared suffix) and linked
    as ``<stem><their extension>``."""
    out.mkdir(parents=True, exist_ok=True)
    stems = sorted({s for v in splits.values() for s in v})
    (out / "images").mkdir(exist_ok=True)
    images = {p.stem: p for p in (root / "images").iterdir()}
    masks = {
        lb: mask_files((mask_dir or {}).get(lb, root / "masks" / lb), set(images)) for lb in labels
    }
    for s in stems:
        _link(images[s], out / "images" / images[s].name)
        for lb in labels:
            (out / "masks" / lb).mkdir(parents=True, exist_ok=True)
            if s in masks[lb]:  # an image without this label's mask gets none here either
                src = masks[lb][s]
                _link(src, out / "masks" / lb / f"{s}{src.suffix}")
            soft = root / "softmaps" / lb / f"{s}.png"  # annotators' agreement, for soft targets
            if soft.is_file():
                (out / "softmaps" / lb).mkdir(parents=True, exist_ok=True)
                _link(soft, out / "softmaps" / lb / soft.name)
    (out / "splits.json").write_text(json.dumps(splits, indent=1))
    meta = root / "meta"
    if meta.is_dir() and not (out / "meta").exists():
        os.symlink(meta.resolve(), out / "meta")
    return out


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def softmap_masks(
    root: Path, out: Path, labels: tuple[str, ...], level: int = 255
) -> dict[str, Path]:
    """Binary masks from the expert soft maps (``softmap >= level``; 255 = all four experts), written
    under ``out`` (a scratch folder, never the repository). Returns label -> folder."""
    dirs = {}
    for lb in labels:
        d = out / f"softmap_{level}" / lb
        d.mkdir(parents=True, exist_ok=True)
        for p in sorted((root / "softmaps" / lb).glob("*.png")):
            if not (d / p.name).exists():
                m = np.asarray(Image.open(p)) >= level
                Image.fromarray(m.astype(np.uint8) * 255).save(d / p.name)
        dirs[lb] = d
    return dirs


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical cores"


def md_header(title: str, data: dict[str, Any], script: str) -> list[str]:
    """A results page's first lines: title, then the machine, commit and command of ``data``."""
    return [
        f"# {title}",
        "",
        f"Machine: {data['machine']}. Commit: `{data['commit']}`. "
        f"Command: `python benchmarks/{script}`.",
    ]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)benchmarks/results",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):  # a copy without .git (a lent GPU machine)
        return os.environ.get("BIOUNET_COMMIT", "unknown")


def write_json_md(path: Path, data: dict[str, Any], markdown: str) -> Path:
    """``data`` to ``path`` (JSON) and ``markdown`` beside it (``.md``, the page made from it);
    returns the page's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    page = path.with_suffix(".md")
    page.write_text(markdown)
    return page


def update_results(name: str, key: str, value: Any, results: Path = RESULTS) -> dict[str, Any]:
    """Set ``key`` in <results>/<name>.json (default benchmarks/results; other keys kept), with
    commit and machine. ``commit`` is that of the latest update; ``commits`` holds each key's (keys
    written before it existed get the file's previous ``commit``)."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    commits = data.setdefault("commits", {})
    for k in data:
        if k not in ("commit", "machine", "commits") and k not in commits and data.get("commit"):
            commits[k] = data["commit"]
    data[key] = value
    data["commit"] = commits[key] = git_commit()
    data["machine"] = machine()
    path.write_text(json.dumps(data, indent=2, default=float))
    return data
