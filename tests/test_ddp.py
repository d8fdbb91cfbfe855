"""DDP on CPU (gloo, 2 processes) through a real Hydra multirun: every job starts its own second
rank, which trains that job, in that job's folder — one folder per job, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.data.synthetic import write_vtab_task

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_multirun_writes_one_folder_per_job(tmp_path):
    data = tmp_path / "data"
    # 48 training images (train800val200): 3 batches of 16 in one process, 2 per rank in two.
    write_vtab_task(data, "toy", num_classes=4, n_train=32, n_val=16, n_test=32, img_size=32)
    project = tmp_path / "project"
    sweep = project / "logs" / "sweep"
    cmd = [
        sys.executable, "-m", "src.train", "debug=tiny", "trainer=ddp_cpu",
        f"data.root={data}", "data.task=toy", "data.num_classes=4", "trainer.max_epochs=2",
        "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
        f"hydra.sweep.dir={sweep}", "sigma=0.1,0.5", "-m",
    ]  # fmt: skip
    env = {**os.environ, "PROJECT_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count("All distributed processes registered. Starting with 2 processes") == 2

    # Nothing but the sweep folder under logs/, and in it exactly one folder per job.
    assert [p.name for p in (project / "logs").iterdir()] == ["sweep"]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    assert {p.name for p in sweep.iterdir() if p.is_file()} == {"multirun.yaml"}

    for job, sigma in zip(jobs, (0.1, 0.5), strict=True):
        result = json.loads((job / "results.json").read_text())
        assert result["sigma"] == sigma and result["epochs"] == 2
        assert "test/acc" in result["metrics"]
        # rank 1 ran in this folder: its Hydra log is here, and it wrote nothing else.
        assert (job / "train_ddp_process_1.log").is_file()
        assert sorted(p.name for p in job.glob("checkpoints/*")) == ["epoch001.ckpt", "last.ckpt"]
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 2 * 2  # each rank saw half of the data
