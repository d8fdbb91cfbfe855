"""Every experiment file trains for one batch (debug=fast) on a tiny task in its benchmark's
on-disk layout, with the backbone cut to 2 blocks: a broken override, interpolation or
datamodule argument in any of them fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.data.synthetic import (
    write_domain_sets,
    write_fewshot_task,
    write_fgvc_task,
    write_vtab_task,
)
from src.train import train

# Text experiments (GLUE, GSM-8K) run on tiny transformers models in tests/test_text_train.py,
# the text demo's in tests/test_text_demo.py.
TEXT_EXPERIMENTS = ("glue_", "gsm8k_", "text_demo")
EXPERIMENTS = sorted(
    p.stem
    for p in (Path(__file__).parents[1] / "conf/experiment").glob("*.yaml")
    if not p.stem.startswith(TEXT_EXPERIMENTS)
)

# benchmark → (writer of a tiny task, the overrides that point the experiment at it)
TINY_TASKS = {
    "vtab": (lambda root: write_vtab_task(root, "toy", num_classes=4, n_train=8, n_val=8,
                                          n_test=8, img_size=32),
             ["data.task=toy", "data.num_classes=4"]),
    "fewshot": (lambda root: write_fewshot_task(root, "toy", num_classes=4, shots=(2,),
                                                split_seeds=(0,)),
                ["data.task=toy", "data.num_classes=4", "data.shots=2"]),
    # FGVC knows its five datasets only: a stand-in for CUB, one tiny image per class and split
    "fgvc": (lambda root: write_fgvc_task(root, "cub", num_classes=200, counts=(200,) * 3,
                                          img_size=8),
             ["data.task=cub"]),
    "domain": (lambda root: write_domain_sets(root, "toynet", num_classes=6, shots=2, n_test=6,
                                              subset=(1, 3, 5)),
               ["data.task=toynet", "data.num_classes=6", "data.shots=2"]),
}  # fmt: skip


def benchmark_of(experiment: str) -> str:
    name = experiment.rsplit("_", 1)[0]
    return name if name in TINY_TASKS else "vtab"  # demo: VTAB-1k layout


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_one_batch(compose_cfg, tmp_path, experiment):
    write, task_overrides = TINY_TASKS[benchmark_of(experiment)]
    write(tmp_path / "data")
    cfg = compose_cfg(
        f"experiment={experiment}", "debug=fast", f"data.root={tmp_path / 'data'}",
        *task_overrides, "data.img_size=112", "data.batch_size=4", "backbone.weights=random",
        "+backbone.kwargs.depth=2", "callbacks.progress_bar=null", "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
    )  # fmt: skip
    metrics = train(cfg)
    test_acc = [v for k, v in metrics.items() if k.startswith("test/acc")]
    assert test_acc and all(0.0 <= v <= 1.0 for v in test_acc)
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert results["backbone"] == cfg.backbone.name
    assert results["weights"]["source"] == "random" and results["weights"]["sha256"] is None
    # A paper experiment on random weights, a toy task at 112 px says so; the demos are no
    # paper experiments and record nothing.
    departed = {d["key"] for d in results["paper_departures"] or []}
    if cfg.paper_setup:
        assert {"backbone.weights", "data.img_size", "data.batch_size"} <= departed
        assert ("data.task" in departed) == (benchmark_of(experiment) != "fgvc")  # fgvc: cub
    else:
        assert results["paper_departures"] is None
