"""The real CLI on text: ``python -m src.train experiment=glue_pace task=glue_rte`` and
``experiment=gsm8k_pace`` from a local model folder and data in the users' layouts (tiny
real-format files), STS-B's regression, and the one-line error when the model is not on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import processes
from tests.text_data import write_glue_tsv, write_gsm8k
from tests.text_models import save_tiny_decoder, save_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path: Path, *overrides: str, env: dict | None = None):
    args = [
        *overrides,
        f"data.root={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer=cpu",
        "callbacks.progress_bar=null",
        "cpu_threads=1",
    ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return processes.run("src.train", *args, cwd=tmp_path, timeout=1200, env=full_env)


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.mark.slow
def test_glue_pace_rte_runs_from_a_local_roberta_folder(tmp_path):
    model = save_tiny_encoder(tmp_path / "roberta", "roberta")
    write_glue_tsv(tmp_path / "data")
    proc = run_train(
        tmp_path,
        "experiment=glue_pace",
        "task=glue_rte",
        f"backbone.path={model}",
        "trainer.max_epochs=2",
        "data.batch_size=4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = results(tmp_path)
    assert out["status"] == "finished" and out["pace"] == "pace" and out["task"] == "rte"
    assert 0.0 <= out["metrics"]["test/acc"] <= 1.0
    assert out["metrics"]["train/consistency"] > 0  # the two noisy copies differ
    assert out["params"]["adapter"] == 2 * 2 * 8 * (32 + 32)  # LoRA r8 on query/value, 2 blocks
    assert (tmp_path / "run" / "adapter.safetensors").is_file()
    # src.eval rebuilds the model from the folder and the saved adapter: the same dev accuracy.
    proc = processes.run(
        "src.eval",
        f"run_dir={tmp_path / 'run'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        "trainer.accelerator=cpu",
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"]
    assert evaluated["test/acc"] == pytest.approx(out["metrics"]["test/acc"])


@pytest.mark.slow
def test_stsb_trains_a_regression_head_and_reports_correlations(tmp_path):
    model = save_tiny_encoder(tmp_path / "bert", "bert")
    write_glue_tsv(tmp_path / "data")
    proc = run_train(
        tmp_path,
        "experiment=glue_pace",
        "task=glue_stsb",
        f"backbone.path={model}",
        "trainer.max_epochs=1",
        "data.batch_size=8",
        "pace=fast",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = results(tmp_path)["metrics"]
    assert {"test/pearson", "test/spearman", "val/pearson"} <= set(metrics)
    assert "train/acc" not in metrics


@pytest.mark.slow
def test_gsm8k_pace_runs_from_a_local_phi3_folder(tmp_path):
    model = save_tiny_decoder(tmp_path / "phi3", "phi3")
    write_gsm8k(tmp_path / "data")
    proc = run_train(
        tmp_path,
        "experiment=gsm8k_pace",
        f"backbone.path={model}",
        "trainer.max_epochs=1",
        "data.max_new_tokens=6",
        "optim.lr=1e-3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = results(tmp_path)
    metrics = out["metrics"]
    assert metrics["test/exact_match"] == 0.0  # a random tiny model solves nothing
    assert metrics["train/consistency"] > 0 and metrics["val/loss"] > 0
    assert out["params"]["trainable"] == out["params"]["adapter"]  # the LM head stays frozen


def test_a_model_that_is_not_on_disk_is_one_error_line(tmp_path):
    write_glue_tsv(tmp_path / "data")
    proc = run_train(
        tmp_path, "experiment=glue_lora", env={"HF_HUB_CACHE": str(tmp_path / "empty")}
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "'roberta-base'" in errors[0] and "backbone.path=<folder>" in errors[0]


def test_pace_fast_on_a_causal_lm_is_refused(tmp_path):
    model = save_tiny_decoder(tmp_path / "phi3", "phi3")
    write_gsm8k(tmp_path / "data")
    proc = run_train(tmp_path, "experiment=gsm8k_pace", "pace=fast", f"backbone.path={model}")
    assert proc.returncode == 2
    assert "error: pace=fast keeps every training sample" in proc.stderr
