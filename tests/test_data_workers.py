"""src/data/workers.py: a $TMPDIR too long for DataLoader workers' sockets is refused before a run
starts, exactly where a real DataLoader stops delivering batches (and not a byte earlier)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.data.synthetic import write_vtab_task
from src.data.workers import SOCKET_PATH_MAX, worker_temp_dir_problem
from tests.test_cli import assert_one_error_line, run_train

ROOT = Path(__file__).resolve().parents[1]
# Two workers, four batches, and a DataLoader timeout: a lost batch ends the script, not the test.
LOADER = """
import torch
from torch.utils.data import DataLoader, TensorDataset
data = TensorDataset(torch.randn(64, 3, 8, 8), torch.arange(64))
print(sum(len(y) for _, y in DataLoader(data, batch_size=16, num_workers=2, timeout=10)))
"""


def folder_of_length(base: Path, length: int) -> Path:
    folder = base / ("t" * (length - len(str(base)) - 1))
    folder.mkdir(parents=True, exist_ok=True)
    assert len(str(folder)) == length
    return folder


def loads_with_workers(temp_dir: Path) -> bool:
    env = {**os.environ, "TMPDIR": str(temp_dir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER], env=env, capture_output=True, text=True, timeout=300
    )
    return proc.returncode == 0 and proc.stdout.strip() == "64"


@pytest.mark.slow
def test_the_limit_is_where_a_real_dataloader_stops_delivering(tmp_path):
    base = Path("/tmp") / f"w{os.getpid()}"  # short, whatever pytest's own tmp path is
    try:
        # The socket path is the folder plus 32 bytes: pymp-XXXXXXXX/listener-XXXXXXXX.
        longest_ok = folder_of_length(base, SOCKET_PATH_MAX - 32)
        too_long = folder_of_length(base, SOCKET_PATH_MAX - 31)
        assert worker_temp_dir_problem(2, str(longest_ok)) is None
        assert loads_with_workers(longest_ok)
        problem = worker_temp_dir_problem(2, str(too_long))
        assert problem is not None and "TMPDIR" in problem and "data.num_workers=0" in problem
        assert not loads_with_workers(too_long)
        assert worker_temp_dir_problem(0, str(too_long)) is None  # no workers, no sockets
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_a_launch_with_workers_under_a_long_tmpdir_is_one_line_before_training(
    tmp_path, monkeypatch
):
    data = tmp_path / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=8, n_val=4, n_test=4, img_size=32)
    monkeypatch.setenv("TMPDIR", str(folder_of_length(tmp_path, 120)))
    proc = run_train(tmp_path, f"data.root={data}", "data.task=toy", "data.num_classes=4",
                     "data.num_workers=2")  # fmt: skip
    assert_one_error_line(proc, "data.num_workers=2", "set TMPDIR to a shorter folder")
    written = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert written == []  # refused before the run wrote anything
