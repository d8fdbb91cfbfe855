"""DDP on CPU (gloo, 2 processes) through a real Hydra multirun: every job starts its own second
rank, which trains that job, in that job's folder — one folder per job, nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from src.data.synthetic import write_vtab_task
from tests import processes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_multirun_writes_one_folder_per_job(tmp_path):
    data = tmp_path / "data"
    # 48 training images (train800val200): 3 batches of 16 in one process, 2 per rank in two.
    write_vtab_task(data, "toy", num_classes=4, n_train=32, n_val=16, n_test=32, img_size=32)
    project = tmp_path / "project"
    sweep = project / "logs" / "sweep"
    args = [
        "debug=tiny", "trainer=ddp_cpu",
        f"data.root={data}", "data.task=toy", "data.num_classes=4", "trainer.max_epochs=2",
        "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
        f"hydra.sweep.dir={sweep}", "sigma=0.1,0.5", "-m",
    ]  # fmt: skip
    env = {**os.environ, "PROJECT_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    proc = processes.run("src.train", *args, env=env, timeout=300)  # its ranks start cold
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


# --- PACE-fast's history under DDP -------------------------------------------------------------

N_SAMPLES, BATCH_PER_RANK, FEATURES, CLASSES, EPOCHS = 16, 4, 8, 3, 3


def _rank_order(rank: int, epoch: int) -> list[int]:
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(N_SAMPLES), num_replicas=2, rank=rank, shuffle=True, seed=7)
    sampler.set_epoch(epoch)  # as Lightning does: each epoch's shuffle moves samples across ranks
    return list(sampler)


def _fast_pace_epochs(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """FastPACE over EPOCHS epochs. ``world=2``: this rank's share of a DistributedSampler, one
    gloo process per rank. ``world=1``: one process, each step the two ranks' batches side by
    side. The linear model moves by the same step everywhere, as DDP's synchronised updates do."""
    import torch.distributed as dist

    from src.pace.consistency import FastPACE

    if world == 2:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
    torch.manual_seed(0)
    x, y = torch.randn(N_SAMPLES, FEATURES), torch.randint(0, CLASSES, (N_SAMPLES,))
    model = torch.nn.Linear(FEATURES, CLASSES)
    fast = FastPACE(lam=1.0)
    fast.prepare(N_SAMPLES, CLASSES)
    records = []
    for epoch in range(EPOCHS):
        shares = [_rank_order(r, epoch) for r in range(2)]
        for step, start in enumerate(range(0, N_SAMPLES // 2, BATCH_PER_RANK)):
            ranks = [rank] if world == 2 else [0, 1]
            end = start + BATCH_PER_RANK
            index = torch.tensor([i for r in ranks for i in shares[r][start:end]])
            parts = fast(model, x[index], y[index], index, step)
            records.append((epoch, step, parts.consistency.item()))
            with torch.no_grad():
                model.weight.add_(0.05 * torch.cos(model.weight * (step + 1 + 10 * epoch)))
    torch.save(records, f"{out_dir}/world{world}_rank{rank}.pt")
    if world == 2:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fast_pace_history_is_shared_across_ranks(tmp_path):
    """Two gloo ranks and one process on the same data order give the same consistency terms,
    also for samples that the previous epoch showed to the other rank."""
    import torch.multiprocessing as mp

    mp.spawn(_fast_pace_epochs, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    _fast_pace_epochs(0, 1, "", str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"world2_rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "world1_rank0.pt")

    # The reshuffle moves samples across ranks, so each rank needs the other's history.
    moved = set(_rank_order(0, 1)) - set(_rank_order(0, 0))
    assert moved
    assert [r[:2] for r in rank0] == [r[:2] for r in single] == [r[:2] for r in rank1]
    for (epoch, step, c0), (_, _, c1), (_, _, both) in zip(rank0, rank1, single, strict=True):
        if epoch == 0:
            assert c0 == c1 == both == 0.0  # nothing seen before
        else:
            assert both > 0
            # equal batch sizes: the mean over 8 samples is the mean of the two ranks' means
            assert (c0 + c1) / 2 == pytest.approx(both, rel=1e-5), (epoch, step)
