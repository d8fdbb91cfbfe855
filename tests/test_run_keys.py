"""src/run/keys.py: every key of every config has one role, from an entry of its table, and the
readers act on it — a report row, a resume, the loggers' hyper-parameters."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import OmegaConf

import src
from src.errors import UserError
from src.report import build_tables
from src.run.folder import prepare_run_folder
from src.run.keys import ROLES, KeyRole, key_role, matching_entry
from src.run.loggers import flatten, run_config
from src.runs import load_runs
from tests.test_report import write_run

CONF = src.CONF_DIR
src.register_configs()  # the adapter schemas the configs build on


def group_options() -> list[str]:
    """``group=option`` for every option of every config group (``hydra/launcher=slurm`` too)."""
    return sorted(
        f"{path.parent.relative_to(CONF)}={path.stem}"
        for path in CONF.glob("*/**/*.yaml")
        if path.parent != CONF
    )


@pytest.fixture(scope="module")
def every_key() -> set[str]:
    """Every key a run's config can hold: the keys of the config composed with each group option
    (Hydra's own included), the groups' names as a user types them (``hparams_search=…``), the
    datamodules' arguments a user adds (``+data.pin_memory=true``), and the cluster keys
    conf/local/README.md shows."""
    keys: set[str] = set()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for override in ["seed=0", *group_options()]:
            cfg = compose("train", overrides=[override], return_hydra_config=True)
            keys |= set(flatten(OmegaConf.to_container(cfg, resolve=False)))
            keys.add(override.split("=")[0])
    GlobalHydra.instance().clear()
    for path in CONF.glob("data/*.yaml"):
        datamodule = get_class(OmegaConf.load(path)._target_)
        keys |= {f"data.{name}" for name in inspect.signature(datamodule).parameters}
    local = re.search(r"```yaml\n(.*?)```", (CONF / "local" / "README.md").read_text(), re.S)
    keys |= set(flatten(yaml.safe_load(local.group(1))))
    return keys


def test_every_key_of_every_config_has_an_entry(every_key):
    assert len(every_key) > 250  # the configs were read
    assert sorted(k for k in every_key if matching_entry(k) is None) == []


def test_no_entry_is_dead(every_key):
    deciding = {matching_entry(key) for key in every_key}
    assert [entry for entry in ROLES if entry not in deciding] == []


def test_roles_of_keys_the_readers_disagreed_on():
    assert key_role("seed") is key_role("data.split_seed") is KeyRole.REPLICATE
    assert key_role("data.protocol") is KeyRole.RESULT  # tune and final runs never merge
    assert key_role("hparams_search") is key_role("optimized_metric") is KeyRole.SEARCH
    for plumbing in ("overwrite", "cpu_threads", "extras.print_config", "diagnostics.fp_distance",
                     "callbacks.progress_bar._target_", "data.cache_limit_gb", "hydra/launcher",
                     "trainer.enable_model_summary", "backbone.img_size"):  # fmt: skip
        assert key_role(plumbing) is KeyRole.PLUMBING, plumbing
    assert key_role("trainer.devices") is KeyRole.RESULT  # data.batch_size is per process
    # The most specific entry wins, and a key nobody named decides the result.
    assert key_role("recipe.grad_norm_every") is KeyRole.PLUMBING
    assert key_role("recipe.drop_last") is KeyRole.RESULT
    assert key_role("a_key_added_later") is KeyRole.RESULT
    assert key_role("trainer.a_new_trainer_argument") is KeyRole.RESULT


# ---------------------------------------------------------------------------- the readers
def only_row(folder) -> list[str]:
    (table,), _ = build_tables(load_runs([folder]))
    assert len(table.rows) == 1, [label for label, _ in table.rows]
    return table.rows[0][1]


def test_report_averages_seeds_that_differ_only_in_plumbing(tmp_path):
    write_run(tmp_path / "s1", "toy", {"test/acc": 0.5}, seed=1, overwrite=False,
              cpu_threads="auto", extras__print_config=True, trainer__accelerator="auto",
              diagnostics__fp_distance=True, data__split_seed=0)  # fmt: skip
    write_run(tmp_path / "s2", "toy", {"test/acc": 0.7}, seed=2, overwrite=True, cpu_threads=1,
              extras__print_config=False, trainer__accelerator="gpu",
              diagnostics__fp_distance=False, data__split_seed=1)  # fmt: skip
    task, accuracy, seeds = only_row(tmp_path)[:3]
    assert (task, accuracy, seeds) == ("toy", "60.00 ± 14.14", "2")


def test_report_keeps_runs_on_another_number_of_devices_apart(tmp_path):
    write_run(tmp_path / "one", "toy", {"test/acc": 0.5}, seed=1, trainer__devices=1)
    write_run(tmp_path / "two", "toy", {"test/acc": 0.7}, seed=2, trainer__devices=2)
    (table,), _ = build_tables(load_runs([tmp_path]))
    assert sorted(label for label, _ in table.rows) == [
        "PACE σ=1.2 λ=1.0 trainer.devices=1",
        "PACE σ=1.2 λ=1.0 trainer.devices=2",
    ]


def unfinished_run(compose_cfg, *overrides):
    """A run folder holding an unfinished run (its config.yaml), composed with ``overrides``."""
    cfg = compose_cfg(*overrides)
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    return folder


def test_resume_may_change_plumbing_but_not_the_result_or_the_replicate(compose_cfg):
    unfinished_run(compose_cfg, "seed=1")
    plumbing = ("diagnostics.fp_distance=false", "diagnostics.grad_norm_every=0", "cpu_threads=1",
                "logger=tensorboard", "data.num_workers=0", "extras.print_config=false",
                "paper_setup=vtab", "tags=[again]")  # fmt: skip
    launch = prepare_run_folder(compose_cfg("seed=1", "ckpt_path=last", *plumbing))
    assert launch.continues_run
    for change, shown in (("sigma=0.1", "sigma 0.5 -> 0.1"), ("seed=2", "seed 1 -> 2")):
        with pytest.raises(UserError, match=re.escape(shown)):
            prepare_run_folder(compose_cfg("seed=1", "ckpt_path=last", change))


def test_loggers_get_the_setting_and_the_seed_not_the_plumbing(compose_cfg):
    logged = run_config(compose_cfg("seed=3"))
    assert logged["seed"] == 3 and logged["sigma"] == logged["pace.sigma"] == 0.5
    assert {"data.protocol", "data.task", "adapter.rank", "optim.lr", "trainer.devices"} <= set(
        logged
    )
    plumbing = {"paths.output_dir", "cpu_threads", "overwrite", "data.root", "data.num_workers",
                "diagnostics.fp_distance", "optimized_metric", "logger.csv.save_dir", "tags",
                "callbacks.model_checkpoint.dirpath", "extras.print_config", "task_name",
                "trainer.accelerator", "ckpt_path"}  # fmt: skip
    assert plumbing & set(logged) == set()


def test_a_job_folder_is_named_by_the_setting_and_the_seed_not_the_plumbing():
    overrides = ["experiment=vtab_pace", "sigma=0.5", "seed=1", "data.num_workers=2",
                 "overwrite=true", "logger=csv", "hydra.sweep.dir=/tmp/sweep", "cpu_threads=1",
                 "hparams_search=pace_grid", "+trainer.profiler=simple"]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    named = cfg.hydra.job.override_dirname.split(",")
    assert named == ["+trainer.profiler=simple", "experiment=vtab_pace", "seed=1", "sigma=0.5"]
