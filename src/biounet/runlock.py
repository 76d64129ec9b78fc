"""One training process per run folder: two processes writing the same best.pt, last.pt and
metrics.csv (a second ``train --resume`` started while the first still runs) would interleave
their epochs and leave a run that neither of them trained."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from biounet.errors import BiounetError

LOCK_NAME = ".lock"
# what a finished or interrupted run leaves in its folder (train, fundus pipeline, train-em)
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "fundus.pt", "model.pt", "summary.json")


def refuse_existing_run(out: Path, hint: str) -> None:
    """A training run never starts afresh in a folder that holds a run: it would replace its
    checkpoints and curves one by one and leave the rest stale. ``hint``: what the caller can do
    instead (the message's end)."""
    out = Path(out)
    if out.is_file():
        raise BiounetError(f"{out}: is a file; the run's folder goes there")
    found = [n for n in RUN_FILES if (out / n).exists()]
    if found:
        raise BiounetError(f"{out}: holds a run already ({', '.join(found)}); {hint}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _holder(path: Path) -> tuple[str, int] | None:
    """(host, pid) written in a lock file; None when unreadable (half written)."""
    try:
        host, pid = path.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (this host and pid) while the body runs; BiounetError where another
    live process holds it. A lock left by a process that died on this host (killed, crashed) is
    taken over; one from another host is respected (its process cannot be checked from here)."""
    path = Path(run_dir) / LOCK_NAME
    me = (socket.gethostname(), os.getpid())
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and holder[0] == me[0] and not _alive(holder[1]):
                path.unlink(missing_ok=True)  # its process is gone: a stale lock
                continue
            who = f"pid {holder[1]} on {holder[0]}" if holder else "a process"
            raise BiounetError(
                f"{run_dir}: {who} is training into this folder; wait for it to finish, or "
                f"delete {path} if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{me[0]} {me[1]}\n")
        break
    else:
        raise BiounetError(f"{path}: could not take the run folder's lock")
    try:
        yield
    finally:
        if _holder(path) == me:
            path.unlink(missing_ok=True)
