"""The task group: every experiment composes with every task of its benchmark, the paper's
per-task recipe reaches the model and the optimiser, and one glob sweeps a whole benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from src.adapters import branch_modules
from src.data import BENCHMARKS
from src.data.synthetic import write_vtab_task
from src.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
TARGETS = {name: f"src.data.{cls.__name__}" for name, cls in BENCHMARKS.items()}


def tasks_of(benchmark: str) -> list[str]:
    return sorted(p.stem for p in (CONF / "task").glob(f"{benchmark}_*.yaml"))


def test_one_task_file_per_task_of_each_benchmark():
    for benchmark, cls in BENCHMARKS.items():
        assert tasks_of(benchmark) == sorted(f"{benchmark}_{t}" for t in cls.tasks)


@pytest.mark.parametrize(
    "experiment, task",
    [
        (f"{benchmark}_{kind}", task)
        for benchmark in BENCHMARKS
        for kind in ("baseline", "pace")
        for task in tasks_of(benchmark)
    ],
)
def test_every_experiment_composes_for_every_task(compose_cfg, experiment, task):
    benchmark = experiment.rsplit("_", 1)[0]
    cfg = OmegaConf.to_container(
        compose_cfg(f"experiment={experiment}", f"task={task}"), resolve=True
    )
    assert cfg["data"]["_target_"] == TARGETS[benchmark]
    assert cfg["data"]["task"] == task.split("_", 1)[1]
    assert cfg["pace"]["mode"] == ("none" if experiment.endswith("baseline") else "pace")
    recipe = OmegaConf.load(CONF / "task" / f"{task}.yaml")
    assert cfg["adapter"]["rank"] == recipe.paper_rank
    assert cfg["optim"]["lr"] == recipe.optim.lr
    assert cfg["optim"]["weight_decay"] == recipe.optim.weight_decay
    assert cfg["trainer"]["max_epochs"] == (300 if benchmark == "vtab" else 100)


@pytest.mark.parametrize(
    "task, adapter, rank, lr, wd",
    [
        ("vtab_cifar", "lora_mul_vpt_add", 10, 1e-3, 1e-4),
        ("vtab_clevr_dist", "lora_add", 8, 1e-4, 1e-4),
        ("vtab_smallnorb_ele", "lora_add", 4, 2e-4, 1e-2),
        ("fgvc_stanford_dogs", "lora_mul_vpt_add", 24, 5e-3, 1e-2),
        ("fewshot_oxford-pets", "lora_mul_vpt_add", 18, 2e-3, 1e-4),
        ("domain_imagenet", "lora_mul_vpt_add", 10, 5e-4, 1e-2),
    ],
)
def test_recipe_values_are_the_papers(compose_cfg, task, adapter, rank, lr, wd):
    cfg = compose_cfg(f"task={task}")
    assert (cfg.adapter.name, cfg.adapter.rank, cfg.optim.lr, cfg.optim.weight_decay) == (
        adapter,
        rank,
        lr,
        wd,
    )


def test_command_line_beats_the_recipe(compose_cfg):
    cfg = compose_cfg(
        "experiment=vtab_pace",
        "task=vtab_smallnorb_ele",
        "adapter=vpt_add",
        "adapter.rank=3",
        "optim.lr=0.5",
    )
    assert (cfg.adapter.name, cfg.adapter.rank, cfg.optim.lr) == ("vpt_add", 3, 0.5)
    assert cfg.optim.weight_decay == 1e-2


@pytest.mark.parametrize("adapter", ["adaptformer", "ssf", "lora", "bitfit"])
def test_a_task_recipe_composes_with_any_adapter(compose_cfg, adapter):
    # The recipe's rank belongs to the paper's adapters; another method keeps its own fields.
    cfg = compose_cfg("experiment=vtab_baseline", "task=vtab_dtd", f"adapter={adapter}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["adapter"]["name"] == adapter and resolved["optim"]["lr"] == 1e-3
    assert adapter != "lora" or resolved["adapter"]["rank"] == 8  # LoRA's own default


def test_domain_experiment_selects_its_only_task(compose_cfg):
    cfg = compose_cfg("experiment=domain_pace")
    assert cfg.data.task == "imagenet" and cfg.optim.lr == 5e-4 and cfg.adapter.rank == 10


@pytest.mark.parametrize("benchmark, count", [("vtab", 19), ("fgvc", 5), ("fewshot", 5)])
def test_one_glob_sweeps_every_task_of_a_benchmark(benchmark, count):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        (override,) = parser.parse_overrides([f"task=glob({benchmark}_*)"])
        swept = list(override.sweep_string_iterator())
    GlobalHydra.instance().clear()
    assert len(swept) == count and swept == tasks_of(benchmark)


class Grab(Callback):
    """Keeps what the run built, for the assertions below."""

    module = None
    optimizer = None

    def on_train_start(self, trainer, pl_module):
        Grab.module = pl_module
        Grab.optimizer = trainer.optimizers[0]


def test_recipe_reaches_the_model_and_the_optimiser(compose_cfg, tmp_path):
    """A real run of task=vtab_smallnorb_ele (lora_add, rank 4, lr 2e-4, wd 1e-2)."""
    write_vtab_task(tmp_path, "smallnorb_ele", num_classes=9, n_train=9, n_val=9, n_test=9)
    cfg = compose_cfg(
        "task=vtab_smallnorb_ele",
        "debug=tiny",
        "+trainer.fast_dev_run=true",
        "logger=none",
        f"data.root={tmp_path}",
        "+backbone.kwargs.depth=2",
        "callbacks.progress_bar=null",
        "+callbacks.grab._target_=tests.test_data_recipes.Grab",
    )
    train(cfg)
    layers = dict(branch_modules(Grab.module.model))
    assert layers and {type(layer).__name__ for layer in layers.values()} == {"LoRAAdd"}
    assert {layer.d_w.shape[1] for layer in layers.values()} == {4}
    groups = Grab.optimizer.param_groups
    assert {g["initial_lr"] for g in groups} == {2e-4}
    assert max(g["weight_decay"] for g in groups) == 1e-2
