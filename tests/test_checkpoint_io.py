"""Checkpoints are written beside their target and renamed into place; a kill during the write
leaves a partial file there (never in $TMPDIR), which the next launch removes."""

from __future__ import annotations

import pytest
import torch

import src.checkpoints
from src.checkpoints import AtomicCheckpointIO, remove_partial_checkpoints


def test_a_checkpoint_is_written_beside_its_target_not_in_tmpdir(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    target = tmp_path / "run" / "checkpoints" / "epoch000.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
    assert torch.load(target)["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in target.parent.iterdir()] == ["epoch000.ckpt"]
    assert list(tmpdir.iterdir()) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)

    def fail_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(src.checkpoints.torch, "save", fail_half_way)
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
