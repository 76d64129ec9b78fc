"""One training process per run folder (``biounet.runlock``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from biounet.errors import BiounetError
from biounet.runlock import LOCK_NAME, run_lock


def dead_pid() -> int:
    """The pid of a process that has ended."""
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(p.stdout)


def test_the_lock_is_held_while_the_body_runs_and_released_after(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split() == [
            socket.gethostname(),
            str(os.getpid()),
        ]
        busy = rf"pid {os.getpid()} on .* is training into"
        with pytest.raises(BiounetError, match=busy), run_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(RuntimeError), run_lock(tmp_path):  # released on an error too
        raise RuntimeError("training failed")
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_left_by_a_dead_process_here_is_taken_over_one_from_elsewhere_is_not(
    tmp_path: Path,
) -> None:
    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {dead_pid()}\n")
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[1] == str(os.getpid())
    (tmp_path / LOCK_NAME).write_text("another-host 12345\n")
    with pytest.raises(BiounetError, match="pid 12345 on another-host"), run_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).read_text() == "another-host 12345\n"  # left as it was


def test_train_resume_refuses_a_run_another_process_is_training(
    tmp_path: Path, synthetic_data: Path, capsys
) -> None:
    from biounet.cli import main

    run = tmp_path / "run"
    argv = ["train", "--data", str(synthetic_data), "--out", str(run), "--epochs", "1"]
    assert main(["-q", *argv, "--image-size", "32"]) == 0
    (run / LOCK_NAME).write_text(f"{socket.gethostname()} {os.getppid()}\n")  # a live process
    before = (run / "last.pt").read_bytes()
    assert main(["-q", "train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "is training into this folder" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == before
