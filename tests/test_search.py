"""Search → select → final on a tiny task: an Optuna study that resumes from its SQLite storage,
`src.select` picking the best val/acc, and the final-protocol runs it launches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import src.adapters  # noqa: F401  (registers the adapter schemas the configs compose)
from src.data.synthetic import write_vtab_task
from src.select import main as select_main
from src.select import select_best
from tests import processes
from tests.test_cli import error_line

REPO = Path(__file__).resolve().parents[1]


def compose_search(name: str, tmp_path: Path):
    GlobalHydra.instance().clear()
    os.environ["PROJECT_ROOT"] = str(tmp_path)
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(
                "train", overrides=[f"hparams_search={name}", "data.task=dtd"],
                return_hydra_config=True,
            )  # fmt: skip
    finally:
        del os.environ["PROJECT_ROOT"]
        GlobalHydra.instance().clear()


def test_pace_grid_is_the_papers_grid_on_the_tune_protocol(tmp_path):
    cfg = compose_search("pace_grid", tmp_path)
    assert cfg.data.protocol == "tune" and cfg.optimized_metric == "val/acc"
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert [float(s) for s in params.sigma.split(",")] == [0.1, 0.5, 1, 1.5, 2]
    assert [float(x) for x in params.lam.split(",")] == [0.02, 0.05, 0.1, 0.2, 0.5, 1]


def test_pace_optuna_searches_sigma_and_lam_with_persistent_storage(tmp_path):
    cfg = compose_search("pace_optuna", tmp_path)
    sweeper = cfg.hydra.sweeper
    assert cfg.data.protocol == "tune" and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"sigma", "lam"}
    assert sweeper.study_name == "pace-train-dtd"
    # The storage sits in the sweep folder, which the `${mkdir:}` resolver creates.
    sweep_dir = Path(cfg.hydra.sweep.dir)
    assert sweeper.storage == f"sqlite:///{sweep_dir}/optuna.db" and sweep_dir.is_dir()


def test_select_without_tune_runs_is_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"protocol": "final", "metrics": {}}))
    line = error_line(capsys, select_main, [str(tmp_path)])
    assert "no finished run of the tune protocol" in line


def tune_run(folder: Path, acc: float, *overrides: str) -> dict:
    """A finished tune run as select reads it: results.json and Hydra's record of the overrides."""
    (folder / ".hydra").mkdir(parents=True)
    hydra = {"overrides": {"task": list(overrides), "hydra": []},
             "runtime": {"choices": {"hydra/launcher": "basic"}}}  # fmt: skip
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    return {"protocol": "tune", "metrics": {"val/acc": acc}, "task": "toy", "pace": "pace",
            "adapter": "lora", "run_dir": str(folder)}  # fmt: skip


def test_a_setting_is_averaged_over_seeds_draws_and_plumbing(tmp_path):
    runs = []
    # σ=0.1 has the single best run, σ=0.5 the best mean over its seeds and few-shot draws.
    for sigma, accs in ((0.1, (0.9, 0.1)), (0.5, (0.7, 0.7))):
        for seed, acc in enumerate(accs):
            overrides = ("hparams_search=pace_grid", "data.task=toy", f"sigma={sigma}", "lam=1",
                         f"seed={seed}", f"data.split_seed={seed}", f"data.num_workers={seed}",
                         "logger=tensorboard", "data.protocol=tune")  # fmt: skip
            runs.append(tune_run(tmp_path / f"{sigma}_{seed}", acc, *overrides))
    (selection,) = select_best(runs)
    assert selection["candidates"] == 2 and selection["seeds"] == 2
    assert selection["chosen"] == {"sigma": "0.5"} and selection["val_acc"] == pytest.approx(0.7)
    # The final runs: the setting and the plumbing as searched, every draw the setting was
    # measured on; not the search's own keys, nor the protocol and seeds the command sets.
    assert selection["overrides"] == ["data.task=toy", "sigma=0.5", "lam=1", "data.num_workers=0",
                                      "logger=tensorboard", "data.split_seed=0,1"]  # fmt: skip


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = processes.run("src.train", *overrides, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.mark.slow
def test_search_then_select_then_final(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=32, n_val=16, n_test=32, img_size=32)
    sweep = tmp_path / "search"
    common = [
        "debug=tiny", f"data.root={data}", "data.task=toy", "data.num_classes=4",
        "trainer.max_epochs=1", "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
        "logger=csv", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_jobs=1",
    ]  # fmt: skip
    _train(tmp_path, "hparams_search=pace_optuna", *common, "hydra.sweeper.n_trials=2")
    # The same command with the same folder continues the study.
    _train(tmp_path, "hparams_search=pace_optuna", *common, "hydra.sweeper.n_trials=1")

    import optuna

    study = optuna.load_study(study_name="pace-train-toy", storage=f"sqlite:///{sweep}/optuna.db")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 3
    runs = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert len(runs) == 3 and {r["protocol"] for r in runs.values()} == {"tune"}
    # Optuna was told what each run returned: val/acc on val200.
    assert sorted(t.value for t in trials) == sorted(r["metrics"]["val/acc"] for r in runs.values())

    monkeypatch.chdir(REPO)  # --launch runs `python -m src.train` like a user in the repo
    (selection,) = select_main([str(sweep), "--seeds", "1,2", "--launch"])
    top = max(r["metrics"]["val/acc"] for r in runs.values())
    assert selection["task"] == "toy" and selection["method"] == "pace_lora_mul_vpt_add"
    assert selection["val_acc"] == pytest.approx(top) and selection["candidates"] == 3
    chosen = (float(selection["chosen"]["sigma"]), float(selection["chosen"]["lam"]))
    # One-epoch runs may tie: any run with the top val/acc is a right answer.
    tied = {(r["sigma"], r["lam"]) for r in runs.values() if r["metrics"]["val/acc"] == top}
    assert chosen in tied
    saved = yaml.safe_load((sweep / "selected.yaml").read_text())
    assert saved[0]["chosen"] == selection["chosen"]
    assert "hparams_search=pace_optuna" not in selection["command"]

    finals = [
        json.loads(p.read_text())
        for p in sorted((sweep / "final" / "toy_pace_lora_mul_vpt_add").glob("*/results.json"))
    ]
    assert [r["seed"] for r in finals] == [1, 2]
    for final in finals:
        assert final["protocol"] == "final" and "test/acc" in final["metrics"]
        assert (final["sigma"], final["lam"]) == chosen
