"""src.paper_setup: a paper experiment compares its resolved config with the paper's setup."""

from __future__ import annotations

from pathlib import Path

import pytest

import src.adapters.schemas  # noqa: F401  (the adapter schemas the configs compose)
from src.errors import UserError
from src.paper_setup import PAPER_WEIGHTS, departure_line, departures

PAPER_EXPERIMENTS = sorted(
    p.stem
    for p in (Path(__file__).parents[1] / "conf/experiment").glob("*.yaml")
    if "paper_setup:" in p.read_text()
)


def keys(found):
    return {d["key"]: d for d in found}


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_each_paper_experiment_with_a_task_recipe_is_the_papers_setup(compose_cfg, experiment):
    benchmark = experiment.split("_")[0]
    task = {"vtab": "vtab_svhn", "fgvc": "fgvc_cub", "fewshot": "fewshot_food101",
            "domain": "domain_imagenet"}[benchmark]  # fmt: skip
    cfg = compose_cfg(f"experiment={experiment}", f"task={task}")
    assert departures(cfg, PAPER_WEIGHTS) == []
    assert departures(cfg, "file:ViT-B_16.npz@sha256:0123", "/data/ViT-B_16.npz") == []
    assert departure_line(cfg, []).startswith("paper setup: this run follows the paper's")


def test_every_substitution_is_named_with_the_papers_value(compose_cfg):
    # data.task alone, without task=vtab_svhn: the default lr and rank, not svhn's recipe.
    cfg = compose_cfg(
        "experiment=vtab_pace", "data.task=svhn", "data.img_size=112", "backbone.drop_path=0",
        "recipe.head_init=trunc_normal", "trainer.max_epochs=100", "data.crop=true",
    )  # fmt: skip
    found = keys(departures(cfg, "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"))
    assert found["backbone.weights"]["paper"] == f"{PAPER_WEIGHTS} or ViT-B_16.npz"
    assert found["data.img_size"] == {"key": "data.img_size", "value": 112, "paper": 224}
    assert found["optim.lr"]["paper"] == 1e-2 and found["adapter.rank"]["paper"] == 14
    assert found["backbone.drop_path"]["paper"] == 0.1
    assert found["recipe.head_init"]["paper"] == "torch_default"
    assert found["trainer.max_epochs"]["paper"] == 300 and found["data.crop"]["paper"] is False
    assert found["optim.weight_decay"]["paper"] == 1e-3 and "data.task" not in found
    assert "adapter.name" not in found and "data.batch_size" not in found
    line = departure_line(cfg, list(found.values()))
    assert "\n" not in line and f"in {len(found)} setting(s)" in line
    assert "data.img_size=112 (paper: 224)" in line


def test_custom_task_and_shots_outside_the_papers(compose_cfg):
    cfg = compose_cfg("experiment=fewshot_pace", "data.task=toy", "data.shots=3")
    found = keys(departures(cfg, PAPER_WEIGHTS))
    assert found["data.task"]["value"] == "toy" and "food101" in found["data.task"]["paper"]
    assert found["data.shots"]["paper"] == [1, 2, 4, 8, 16]
    line = departure_line(cfg, list(found.values()))
    assert "data.shots=3 (paper: 1 or 2 or 4 or 8 or 16)" in line


def test_only_paper_experiments_compare(compose_cfg):
    assert departures(compose_cfg("experiment=fewshot_demo"), "random") is None
    assert departures(compose_cfg(), PAPER_WEIGHTS) is None
    with pytest.raises(UserError, match="paper_setup=vtb is not one of"):
        departures(compose_cfg("paper_setup=vtb"), PAPER_WEIGHTS)
