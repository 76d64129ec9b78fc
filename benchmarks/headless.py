"""Headless Chromium, as the report's browser test and the screenshot benchmark run it: no network
(the report must need none), a fresh profile per run, console messages on stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # the page must need no network
    "--enable-logging=stderr",
    "--v=0",
]


def run_chromium(
    profile: Path, url: str, *extra: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """One headless run of ``url`` with the profile folder ``profile`` and ``extra`` flags."""
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def console_lines(stderr: str) -> list[str]:
    """Anything the page wrote to the console (errors, uncaught exceptions, failed loads)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
