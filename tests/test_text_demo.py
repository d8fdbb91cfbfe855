"""The text demo (experiments/text_demo/): claims.py pairs each method with LoRA on the same
TWEETS-k<k>-s<draw> folder, and ``make demo-text`` runs the three methods over the draws into one
folder and prints the paired table (a tiny random BERT stands in for the MiniLM)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.errors import UserError
from src.train import train
from tests.text_models import save_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments/text_demo/claims.py"
spec = importlib.util.spec_from_file_location("text_demo_claims", SCRIPT)
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)


def write_tweets(root: Path, draws=(0, 1), k: int = 4) -> None:
    """TWEETS-k<k>-s<draw> folders as make text-data writes them (GLUE single-sentence tsv)."""
    words = ["great rally tonight", "crooked media", "stronger together", "make america great"]
    for draw in draws:
        folder = root / "glue_data" / f"TWEETS-k{k}-s{draw}"
        folder.mkdir(parents=True)
        for split, n in (("train", 2 * k), ("dev", 6)):
            rows = [f"{words[(i + draw) % 4]} {i}\t{i % 2}" for i in range(n)]
            (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")


def test_the_text_demo_experiment_trains_on_a_tweets_folder_with_the_fixed_protocol(
    compose_cfg, tmp_path
):
    save_tiny_encoder(tmp_path / "checkpoints" / "minilm_l6", "bert")
    write_tweets(tmp_path / "data", draws=(0,))
    cfg = compose_cfg("experiment=text_demo", "debug=fast", f"paths.root_dir={tmp_path}",
                      "data.task=TWEETS-k4-s0", "callbacks.progress_bar=null", "cpu_threads=1",
                      "trainer.enable_model_summary=false", "pace=fast", "lam=0.1")  # fmt: skip
    # The protocol experiments/text_demo/README.md fixed before any run (LoRA alone unless
    # pace= is given; make demo-text gives pace=none,pace and pace=fast lam=0.1).
    assert compose_cfg("experiment=text_demo").pace.mode == "none"
    assert (cfg.pace.mode, cfg.pace.sigma, cfg.pace.lam) == ("fast", 1.5, 0.1)
    assert compose_cfg("experiment=text_demo", "pace=pace").pace.lam == 1.0
    assert (cfg.adapter.name, cfg.adapter.rank) == ("lora", 8)
    assert list(cfg.adapter.targets) == ["attention.self.query", "attention.self.value"]
    assert (cfg.data.batch_size, cfg.data.max_length, cfg.data.protocol) == (16, 64, "final")
    assert cfg.backbone.path == f"{tmp_path}/checkpoints/minilm_l6"
    assert cfg.diagnostics.grad_norm_every == "epoch"
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0  # dev.tsv, the demo's reported accuracy
    assert "train/grad_norm" in metrics and "val/fp_distance" in metrics


def test_the_text_demo_evaluates_once_at_the_end(compose_cfg, tmp_path):
    cfg = compose_cfg("experiment=text_demo", "trainer.max_epochs=3")
    assert cfg.trainer.check_val_every_n_epoch == 3 and cfg.trainer.num_sanity_val_steps == 0


def write_run(folder, task, mode, acc, train_acc, grad_norm, fp_distance, lam=1.0):
    """A run folder as src.train writes it, with only what the report and the claims read."""
    folder.mkdir(parents=True)
    config = {"data": {"_target_": "src.data.glue.GLUEDataModule", "task": task,
                       "protocol": "final"},
              "pace": {"mode": mode, "sigma": 1.5, "lam": lam}, "seed": 42,
              "trainer": {"max_epochs": len(train_acc)}}  # fmt: skip
    (folder / "config.yaml").write_text(json.dumps(config))
    results = {"epochs": len(train_acc), "peak_rss_mb": 1000.0, "metrics": {"test/acc": acc}}
    (folder / "results.json").write_text(json.dumps(results))
    rows = ["epoch,train/acc,train/grad_norm,val/fp_distance"]
    rows += [f"{e},{a},{g},{f}" for e, (a, g, f) in
             enumerate(zip(train_acc, grad_norm, fp_distance, strict=True))]  # fmt: skip
    (folder / "summary.csv").write_text("\n".join(rows) + "\n")


def test_each_method_is_paired_with_lora_on_its_own_draw(tmp_path):
    # Draw 0 is easy and draw 1 hard: unpaired, the draws' spread would swamp the gains.
    for draw, base, gains in ((0, 0.80, (0.02, 0.00)), (1, 0.60, (0.04, 0.02))):
        task = f"TWEETS-k16-s{draw}"
        fitting = [0.6, 1.0, 1.0]  # LoRA fits at epoch 1: its fitting phase is epoch 0
        write_run(tmp_path / f"none{draw}", task, "none", base, fitting, [4, 1, 1], ["", "", 2])
        write_run(tmp_path / f"pace{draw}", task, "pace", base + gains[0], [0.5, 0.9, 1.0],
                  [2, 3, 3], ["", "", 1])  # fmt: skip
        write_run(tmp_path / f"fast{draw}", task, "fast", base + gains[1], [0.5, 0.9, 1.0],
                  [4, 4, 4], ["", "", 4], lam=0.1)  # fmt: skip
    # Another k's runs pair among themselves only (its LoRA run is missing: no pair at all).
    write_run(tmp_path / "other", "TWEETS-k8-s0", "pace", 0.99, [1, 1, 1], [1, 1, 1], [1, 1, 1])
    result = claims.paired_claims(claims.demo_runs([tmp_path]))
    assert sorted(result) == [(16, "LoRA+fast σ=1.5 λ=0.1"), (16, "LoRA+pace σ=1.5 λ=1.0")]
    pace = result[16, "LoRA+pace σ=1.5 λ=1.0"]
    assert pace["accuracy gain (points)"] == (pytest.approx(3.0), pytest.approx(1.0), 2)
    assert pace["grad-norm ratio, fitting phase"][0] == pytest.approx(0.5)  # epoch 0: 2 / 4
    assert pace["FP-distance ratio, last epoch"][0] == pytest.approx(0.5)
    assert pace["baseline fitting epochs"][0] == 1
    text = claims.report([tmp_path])
    assert "| 16 | LoRA | 80.0 | 60.0 |" in text and "| 8 | LoRA+pace" in text
    assert "| 16 | LoRA+pace σ=1.5 λ=1.0 | +3.00 ± 1.00 (n=2)" in text
    assert "+3.00 ± 1.00 points, paired t = 3.00 (1 d.o.f.): gain beyond 2 s.e." in text
    assert "fast σ=1.5 λ=0.1: +1.00 ± 1.00 points, paired t = 1.00 (1 d.o.f.): null result" in text


def test_a_folder_without_demo_runs_is_an_error(tmp_path):
    write_run(tmp_path / "rte", "rte", "none", 0.7, [1], [1], [1])
    with pytest.raises(UserError, match="no complete data.protocol=final run of a TASK-k<k>-s<d"):
        claims.demo_runs([tmp_path])


@pytest.mark.slow
def test_make_demo_text_runs_the_three_methods_over_the_draws_and_prints_the_paired_table(
    tmp_path,
):
    """The real make recipe and multiruns on a tiny BERT where the MiniLM goes, two draws of 4
    tweets a class; the asset targets are taken as made (-o), as on a machine that ran them."""
    save_tiny_encoder(tmp_path / "checkpoints" / "minilm_l6", "bert")
    write_tweets(tmp_path / "data")
    out = tmp_path / "logs" / "demo_text"
    cmd = ["make", "-f", str(ROOT / "Makefile"), f"VENV={sys.prefix}", "-o", "install",
           "-o", "text-data", "-o", "text-backbone", "demo-text", f"DEMO_TEXT_DIR={out}",
           "DEMO_TEXT_DRAWS=TWEETS-k4-s0,TWEETS-k4-s1",
           "RUN_ARGS=cpu_threads=1 trainer.max_epochs=2 callbacks.progress_bar=null"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(out.rglob("results.json"))) == 6  # 3 methods × 2 draws
    for method in ("LoRA", "LoRA+pace σ=1.5 λ=1.0", "LoRA+fast σ=1.5 λ=0.1"):
        assert f"| 4 | {method} |" in done.stdout
    assert "| 4 | LoRA+fast σ=1.5 λ=0.1 | " in (out / "claims.md").read_text()
    assert "(n=2)" in done.stdout and "paired t" in done.stdout
