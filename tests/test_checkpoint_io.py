"""Checkpoints are written beside their target and renamed into place; a kill during the write
leaves a partial file there (never in $TMPDIR), which the next launch removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import src.run.checkpoints
from src.run.checkpoints import AtomicCheckpointIO, remove_partial_checkpoints

ROOT = Path(__file__).resolve().parents[1]


# A child that saves one checkpoint and is killed (SIGKILL: no clean-up runs) the moment the
# file is complete but not yet renamed into place: the worst moment for a kill.
KILLED_WHILE_SAVING = """
import os, signal, sys, torch
from src.run.checkpoints import AtomicCheckpointIO
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1000)}, sys.argv[1])
"""


def test_a_kill_while_saving_leaves_the_partial_file_beside_its_target(tmp_path):
    tmpdir, checkpoints = tmp_path / "tmp", tmp_path / "run" / "checkpoints"
    tmpdir.mkdir()
    checkpoints.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SAVING, str(checkpoints / "epoch000.ckpt")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert list(tmpdir.iterdir()) == []  # Lightning's own writer staged it here
    (partial,) = checkpoints.iterdir()
    assert partial.name == f".epoch000.ckpt.partial-{partial.name.rsplit('-', 1)[1]}"
    assert remove_partial_checkpoints(checkpoints) == [partial] and not partial.exists()


def test_a_checkpoint_is_renamed_into_place(tmp_path):
    target = tmp_path / "run" / "checkpoints" / "epoch000.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
    assert torch.load(target)["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in target.parent.iterdir()] == ["epoch000.ckpt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)

    def fail_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(src.run.checkpoints.torch, "save", fail_half_way)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_partial_files_a_kill_left_are_removed_and_nothing_else(tmp_path):
    run, checkpoints = tmp_path, tmp_path / "checkpoints"
    checkpoints.mkdir()
    stale = [checkpoints / ".epoch003.ckpt.partial-4242", run / ".hpc_ckpt_1.ckpt.partial-17"]
    kept = [checkpoints / "epoch002.ckpt", checkpoints / "notes.partial-1", run / "results.json"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(remove_partial_checkpoints(run, checkpoints)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
