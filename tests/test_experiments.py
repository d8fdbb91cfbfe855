"""Every experiment file composes and trains for one batch (debug=fast), on a tiny task with its
backbone cut to 2 blocks: a broken override or interpolation in any of them fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.data.synthetic import write_vtab_task
from src.train import train

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root, "toy", num_classes=4, n_train=8, n_val=8, n_test=8, img_size=32)
    return root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_one_batch(compose_cfg, data_root, experiment):
    cfg = compose_cfg(
        f"experiment={experiment}", "debug=fast", f"data.root={data_root}", "data.task=toy",
        "data.num_classes=4", "data.img_size=112", "data.batch_size=4", "backbone.weights=null",
        "+backbone.kwargs.depth=2", "callbacks.progress_bar=null", "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
        "callbacks.lr_monitor=null",  # debug=fast has no logger, which LearningRateMonitor needs
    )  # fmt: skip
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert results["task"] == "toy" and results["backbone"] == cfg.backbone.name
