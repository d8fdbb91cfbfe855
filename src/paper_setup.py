"""How a run differs from the paper's setup: one comparison of the resolved config with it.

A paper experiment (``experiment=vtab_*``, ``fgvc_*``, ``fewshot_*``, ``domain_*``) sets
``paper_setup: <benchmark>``. At start the run compares its resolved config with the setup the
paper reports for that benchmark (Ni et al., NeurIPS 2024, §5 and App. B; the official code's
training behaviour, conf/recipe/paper.yaml; the per-task recipe, conf/task/): backbone and its
weights, resolution, drop-path, batch, epochs, schedule, precision, crop policy, the task and its
adapter/rank/lr/weight decay. Every difference is printed on one line and kept in results.json
as ``paper_departures``. Nothing is refused: a departure is often the point (a smaller
resolution to save time, a tune sweep); it is just never silent.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src import CONF_DIR

PAPER_WEIGHTS = "timm:vit_base_patch16_224.orig_in21k"
# Files accepted as the paper's weights by name: Google ships ViT-B/16 IN-21k as this file.
PAPER_WEIGHT_FILES = ("ViT-B_16.npz",)

# What every benchmark of the paper shares (§5: ViT-B/16 IN-21k, 224 px, AdamW, batch 64,
# 10 warm-up epochs from 1e-6 to a cosine with floor 1e-5, drop-path 0.1, fp32), then each one's.
COMMON = {
    "backbone.name": "vit_base_patch16_224",
    "data.img_size": 224,
    "backbone.drop_path": 0.1,
    "data.batch_size": 64,
    "optim.warmup_epochs": 10,
    "optim.warmup_lr": 1.0e-6,
    "optim.min_lr": 1.0e-5,
    "trainer.precision": "32-true",
    "trainer.limit_train_batches": None,
    "trainer.limit_test_batches": None,
}
# A tuple is a set of values the paper uses (one run per value).
BENCHMARKS = {
    "vtab": ("VTAB-1k", {"trainer.max_epochs": 300, "data.crop": False}),
    "fgvc": ("FGVC", {"trainer.max_epochs": 100, "data.crop": True}),
    "fewshot": (
        "few-shot",
        {
            "trainer.max_epochs": 100,
            "data.crop": True,
            "data.shots": (1, 2, 4, 8, 16),
            "data.split_seed": (0, 1, 2),
        },
    ),  # fmt: skip
    "domain": ("domain-shift", {"trainer.max_epochs": 100, "data.crop": True, "data.shots": 16}),
}
# What conf/task/<benchmark>_<task>.yaml sets that is the paper's per-task recipe.
TASK_KEYS = ("adapter.name", "adapter.rank", "optim.lr", "optim.weight_decay")


def paper_tasks(benchmark: str) -> list[str]:
    """The benchmark's tasks that have a paper recipe (conf/task/<benchmark>_<task>.yaml)."""
    return sorted(p.stem.split("_", 1)[1] for p in (CONF_DIR / "task").glob(f"{benchmark}_*.yaml"))


def task_recipe(benchmark: str, task: str) -> dict:
    """What conf/task/<benchmark>_<task>.yaml sets, as flat config keys (``adapter.name`` for an
    adapter it selects, ``adapter.rank`` from its ``paper_rank``); {} for a task without one."""
    from src.run.loggers import flatten

    path = CONF_DIR / "task" / f"{benchmark}_{task}.yaml"
    if not path.is_file():
        return {}
    tree = OmegaConf.to_container(OmegaConf.load(path))
    flat = {}
    for entry in tree.pop("defaults", []):
        for key, value in entry.items():
            if key.startswith("override /") and key != "override /data":
                flat[f"{key.removeprefix('override /')}.name"] = value
    flat |= flatten(tree)
    if "paper_rank" in flat:  # the paper's adapters read their rank from it
        flat["adapter.rank"] = flat["paper_rank"]
    return flat


def paper_setup(benchmark: str, task: str) -> dict:
    """The paper's value of every compared key for ``task`` of ``benchmark`` (weights aside)."""
    recipe = {
        f"recipe.{k}": v for k, v in OmegaConf.load(CONF_DIR / "recipe" / "paper.yaml").items()
    }
    setup = {**COMMON, **BENCHMARKS[benchmark][1], **recipe}
    by_task = task_recipe(benchmark, task)
    setup |= {k: by_task[k] for k in TASK_KEYS if k in by_task}
    if "adapter.name" not in setup:  # the paper's adapter unless the task names another
        setup["adapter.name"] = "lora_mul_vpt_add"
    return setup


def departures(cfg: DictConfig, weights_identity: str, weights_file: str | None = None) -> list:
    """``[{"key", "value", "paper"}]`` for every setting where the run differs from the paper's
    setup of ``cfg.paper_setup``; None when the run is no paper experiment."""
    benchmark = cfg.get("paper_setup")
    if not benchmark:
        return None
    if benchmark not in BENCHMARKS:
        from src.errors import UserError

        raise UserError(
            f"paper_setup={benchmark} is not one of the paper's benchmarks "
            f"({', '.join(BENCHMARKS)}); set it to one of them, or null"
        )
    task = str(cfg.data.task)
    found = []
    if task not in paper_tasks(benchmark):
        found.append(_departure("data.task", task, f"one of {', '.join(paper_tasks(benchmark))}"))
    if not _is_paper_weights(weights_identity, weights_file):
        paper = f"{PAPER_WEIGHTS} or {' / '.join(PAPER_WEIGHT_FILES)}"
        found.append(_departure("backbone.weights", weights_identity, paper))
    for key, paper in paper_setup(benchmark, task).items():
        value = OmegaConf.select(cfg, key, default=None)
        if not _same(value, paper):
            found.append(_departure(key, value, paper))
    return found


def departure_line(cfg: DictConfig, found: list[dict]) -> str:
    """The one line a run prints at start about the paper's setup."""
    name = BENCHMARKS[cfg.paper_setup][0]
    if not found:
        return f"paper setup: this run follows the paper's {name} setup (src/paper_setup.py)"
    listed = "; ".join(f"{d['key']}={d['value']} (paper: {_shown(d['paper'])})" for d in found)
    return (
        f"paper setup: this run departs from the paper's {name} setup in {len(found)} "
        f"setting(s): {listed}"
    )


def _is_paper_weights(identity: str, file: str | None) -> bool:
    return identity == PAPER_WEIGHTS or (file is not None and Path(file).name in PAPER_WEIGHT_FILES)


def _same(value, paper) -> bool:
    if isinstance(paper, tuple):
        return any(_same(value, one) for one in paper)
    if isinstance(paper, float) or isinstance(value, float):
        return isinstance(value, int | float) and paper is not None and abs(value - paper) <= 1e-12
    return value == paper


def _shown(paper) -> str:
    return " or ".join(map(str, paper)) if isinstance(paper, tuple | list) else str(paper)


def _departure(key: str, value, paper) -> dict:
    return {"key": key, "value": value, "paper": list(paper) if isinstance(paper, tuple) else paper}
