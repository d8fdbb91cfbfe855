"""One validation pass over the composed config, and Hydra's own errors as one line (in-process;
tests/test_cli_errors.py runs the same mistakes as real commands)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import src.adapters  # noqa: F401  (registers the adapter schemas the configs use)
from src.cli.hydra_errors import config_groups, describe
from src.cli.validation import patch_size, unread_appended_keys, validate_train_config
from src.errors import UserError
from tests import processes
from tests.conftest import CONF_DIR


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sigma=nan"], "sigma=nan must be a finite number >= 0"),
        (["lam=-1"], "lam=-1 must be a finite number >= 0"),
        (["sigma=abc"], "sigma='abc' must be a finite number >= 0"),
        (["pace.sigma=inf"], "pace.sigma=inf must be a finite number >= 0"),
        (["optim.lr=0"], "optim.lr=0 must be a finite number > 0"),
        (["seed=abc"], "seed='abc' must be an integer or null"),
        (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
        (["data.num_workers=-1"], "data.num_workers=-1 must be an integer >= 0"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1"),
        (["data.protocol=bogus"], "data.protocol='bogus' must be one of tune, final"),
        (["data.num_classes=1"], "data.num_classes=1 must be an integer >= 2 or null"),
        (["train=maybe"], "train='maybe' must be true or false"),
        (
            ["data.img_size=30"],
            "data.img_size=30 must be a multiple of the backbone's patch size 16 (e.g. 16)",
        ),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(compose_cfg, overrides, message):
    cfg = compose_cfg("debug=tiny", *overrides)
    with pytest.raises(UserError) as refused:
        validate_train_config(cfg)
    assert str(refused.value) == f"invalid config: {message}"


def test_all_bad_values_in_one_line(compose_cfg):
    cfg = compose_cfg("debug=tiny", "sigma=-1", "optim.lr=-1", "data.batch_size=0")
    with pytest.raises(UserError) as refused:
        validate_train_config(cfg)
    assert str(refused.value).count("must be") == 3 and "\n" not in str(refused.value)


@pytest.mark.parametrize("experiment", ["demo", "vtab_pace", "fgvc_pace", "fewshot_pace"])
def test_shipped_configs_are_valid(compose_cfg, experiment):
    validate_train_config(compose_cfg(f"experiment={experiment}"))
    validate_train_config(compose_cfg("debug=tiny"))


def test_patch_size_from_name_or_kwargs():
    assert patch_size("vit_base_patch16_224", None) == 16
    assert patch_size("vit_small_patch14_dinov2", None) == 14
    assert patch_size("vit_tiny_patch16_224", {"patch_size": 8}) == 8
    assert patch_size("resnet50", None) is None


def test_appended_key_nothing_reads_names_the_closest_real_key(compose_cfg):
    overrides = ["+sigam=0.5", "+trainer.gradient_clip_val=1", "+foo.bar=1"]
    cfg = compose_cfg("debug=tiny", *overrides)
    assert unread_appended_keys([*overrides, "+experiment=demo"], cfg, config_groups()) == [
        "+sigam=0.5 adds a key that nothing reads; did you mean sigma? "
        "(set it without '+': sigma=0.5)",
        # foo exists only because of the override itself: not a suggestion
        "+foo.bar=1 adds a key that nothing reads; remove it (python -m src.train --cfg job "
        "lists every key)",
    ]


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.profiler=simple",  # the Trainer gets the whole trainer node
        "+logger.csv.flush_logs_every_n_steps=1",  # a _target_ node: its constructor gets it
        "+callbacks.model_checkpoint.verbose=true",
        # a new callback: instantiate() reads _target_ itself, the constructor never sees it
        "+callbacks.extra._target_=lightning.pytorch.callbacks.RichModelSummary",
        "+backbone.kwargs.depth=2",  # passed to timm.create_model
        "+optim.foo=1",  # passed whole as keyword arguments (a wrong one fails there)
        "+paper_rank=8",  # read by conf/adapter's interpolations
    ],
)
def test_appended_keys_a_component_reads_are_accepted(compose_cfg, override):
    cfg = compose_cfg("debug=tiny", override)
    assert unread_appended_keys([override], cfg, config_groups()) == []


def test_slurm_keys_are_read_only_by_the_slurm_launcher(compose_cfg):
    """``+slurm.partition=gpu`` is read by hydra/launcher=slurm's interpolations; without that
    launcher nothing reads it."""
    from hydra.core.hydra_config import HydraConfig

    override = "+slurm.partition=gpu"
    cfg = compose_cfg("debug=tiny", override, "hydra/launcher=slurm")
    assert unread_appended_keys([override], cfg, config_groups(), HydraConfig.get()) == []
    cfg = compose_cfg("debug=tiny", override)
    (problem,) = unread_appended_keys([override], cfg, config_groups(), HydraConfig.get())
    assert problem.startswith("+slurm.partition=gpu adds a key that nothing reads")


def composition_error(*overrides: str, config_name: str = "train") -> BaseException:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name, overrides=list(overrides))
    except Exception as err:  # noqa: BLE001
        return err
    finally:
        GlobalHydra.instance().clear()
    raise AssertionError(f"{overrides} composed")


@pytest.mark.parametrize(
    "override, line",
    [
        (
            "adapter=lor",
            "unknown adapter 'lor'; did you mean lora? valid adapter options: adapter,",
        ),
        ("pace=bogus", "unknown pace 'bogus'; valid pace options: fast, lazy, none, pace"),
        ("sigm=0.5", "unknown key 'sigm'; did you mean sigma? to add a new key on purpose"),
        ("optim.lrr=1", "unknown key 'optim.lrr'; did you mean optim.lr?"),
        ("adaptr=lora", "unknown key 'adaptr'; did you mean adapter?"),
        ("adapter.rank=abc", "adapter.rank=abc: Value 'abc' of type 'str' could not be converted"),
        ("+sigma=1", "sigma exists already: set it without '+' (sigma=...)"),
        ("sigma=[", "cannot parse the override (no viable alternative at input '[')"),
    ],
)
def test_hydra_mistakes_are_one_line(override, line):
    described = describe(composition_error(override), "train")
    assert described.startswith(line), described
    assert "\n" not in described


@pytest.mark.slow
def test_appended_keys_a_component_reads_work_in_a_real_multirun(tmp_path):
    """The accepted kinds reach their component: the profiler reports, the CSV logger takes its
    argument, timm builds a 1-block ViT; each job of the sweep finishes."""
    import json
    import os

    from src.data.synthetic import write_vtab_task

    write_vtab_task(tmp_path, "toy", num_classes=4, n_train=16, n_val=4, n_test=4, img_size=32)
    sweep = tmp_path / "sweep"
    proc = processes.run(
        "src.train", "debug=tiny", f"data.root={tmp_path}",
        "data.task=toy", "data.num_classes=4", "trainer.max_epochs=1", "test=false",
        "callbacks.progress_bar=null", "extras.print_config=false",
        "+trainer.profiler=simple", "+logger.csv.flush_logs_every_n_steps=1",
        "+backbone.kwargs.depth=1", f"hydra.sweep.dir={sweep}", "-m", "sigma=0.1,0.2",
        timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("FIT Profiler Report") == 2
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["sigma"] for r in results] == [0.1, 0.2]
    # vit_tiny has 5.5 M parameters in 12 blocks of 0.44 M each: one block leaves < 1.5 M
    assert all(r["params"]["total"] < 1_500_000 for r in results), results[0]["params"]
