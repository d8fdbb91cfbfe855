"""W&B offline through a real 2-job multirun: one W&B run per job, named by the job's overrides,
grouped by experiment and task, carrying the flattened resolved config and the metric history.
TensorBoard gets the same flat config as hparams. Reads back what wandb wrote to disk."""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from src.data.synthetic import write_vtab_task
from src.run.loggers import flatten, run_config
from tests import processes

REPO = Path(__file__).resolve().parents[1]

# The `.wandb` file is a LevelDB-style log: a 7-byte header (":W&B", version), then 32 KiB blocks
# of records `crc:u32 length:u16 type:u8 payload`; a message too long for the rest of a block is
# split into FIRST/MIDDLE/LAST pieces. Each message is a wandb_internal_pb2.Record.
_HEADER, _BLOCK, _RECORD_HEADER = 7, 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:_HEADER]
    messages, pending, pos = [], b"", _HEADER
    while pos + _RECORD_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER:  # the writer pads a block's tail with zeros
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        payload = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        if kind == _FULL:
            messages.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            messages.append(pending + payload)
        else:  # zero padding at the end of the file
            break
    records = []
    for message in messages:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(message)
        records.append(record)
    return records


def wandb_run(job: Path) -> dict:
    """The run's identity, merged config, history rows and whether it was finished."""
    (path,) = job.glob("wandb/offline-run-*/run-*.wandb")  # one W&B run per job
    run, config, history, exited = None, {}, [], False
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "config":
            config |= {item.key: json.loads(item.value_json) for item in record.config.update}
        elif kind == "history":
            history.append(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                 for item in record.history.item}
            )  # fmt: skip
        elif kind == "exit":
            exited = True
    return {"run": run, "config": config, "history": history, "exited": exited}


def test_flatten_joins_nested_keys_with_dots():
    tree = {"sigma": 0.5, "optim": {"lr": 1e-3, "sched": {"warmup": 10}}, "tags": ["a"], "e": {}}
    flat = {"sigma": 0.5, "optim.lr": 1e-3, "optim.sched.warmup": 10, "tags": ["a"]}
    assert flatten(tree) == flat


def test_run_config_drops_plumbing_groups():
    cfg = OmegaConf.create(
        {"sigma": 0.1, "lr": "${sigma}", "logger": {"csv": {}}, "callbacks": {}, "paths": {}}
    )
    assert run_config(cfg) == {"sigma": 0.1, "lr": 0.1}


@pytest.mark.slow
def test_offline_multirun_writes_one_run_per_job_with_config_and_history(tmp_path):
    data = tmp_path / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=32, n_val=16, n_test=32, img_size=32)
    sweep = tmp_path / "sweep"
    args = [
        "debug=tiny", "logger=many", f"data.root={data}",
        "data.task=toy", "data.num_classes=4", "trainer.max_epochs=2", "adapter.rank=3",
        "callbacks.progress_bar=null", "trainer.enable_model_summary=false", "tags=[wb,test]",
        f"hydra.sweep.dir={sweep}", "sigma=0.1,0.5", "-m",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env |= {"WANDB_MODE": "offline", "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = processes.run("src.train", *args, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    runs = [wandb_run(job) for job in jobs]
    assert len({r["run"].run_id for r in runs}) == 2
    for job, sigma, wb in zip(jobs, (0.1, 0.5), runs, strict=True):
        assert wb["exited"]  # wandb.finish() closed the run before the next job
        run = wb["run"]
        assert run.project == "pace" and run.run_group == "None-toy"
        assert list(run.tags) == ["wb", "test"]
        hydra_job = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]
        assert run.display_name == "train-" + hydra_job["override_dirname"]
        assert f"sigma={sigma}" in run.display_name

        config = wb["config"]
        expected = {
            "sigma": sigma, "lam": 1.0, "seed": 42, "pace.mode": "pace", "pace.sigma": sigma,
            "adapter.name": "lora_mul_vpt_add", "adapter.rank": 3, "data.task": "toy",
            "data.protocol": "final", "backbone.name": "vit_tiny_patch16_224",
            "optim.lr": 1e-3,
            "backbone.weights_source": "random", "backbone.weights_sha256": None,
        }  # fmt: skip
        assert {k: config.get(k) for k in expected} == expected
        # Plumbing is no hyper-parameter (the tags are the W&B run's own, above).
        assert not {"tags", "paths.output_dir", "data.root", "cpu_threads"} & set(config)
        result = json.loads((job / "results.json").read_text())
        assert config["params/trainable"] == result["params"]["trainable"]

        history = wb["history"]
        logged = {key for row in history for key in row}
        assert {"train/loss_step", "train/loss_epoch", "val/acc", "test/acc"} <= logged
        assert {"train/grad_norm", "val/fp_distance"} <= logged
        # The same values as the CSV logger's, epoch by epoch.
        rows = list(csv.DictReader(open(job / "csv" / "metrics.csv")))
        csv_val = [float(r["val/acc"]) for r in rows if r["val/acc"]]
        assert [row["val/acc"] for row in history if "val/acc" in row] == csv_val
        assert len(csv_val) == 2
        (test_acc,) = [row["test/acc"] for row in history if "test/acc" in row]
        assert test_acc == pytest.approx(result["metrics"]["test/acc"])

        # TensorBoard's hparams: the same flat config.
        hparams = yaml.safe_load((job / "tensorboard" / "hparams.yaml").read_text())
        assert {k: hparams.get(k) for k in expected} == expected
        events = b"".join(p.read_bytes() for p in job.glob("tensorboard/events.out.tfevents.*"))
        assert b"adapter.rank" in events and b"hparams" in events
