"""Every method through the real entry points: Hydra configs, Lightning training, src.eval."""

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.adapters import ADAPTERS, branch_modules, iter_blocks
from src.data.synthetic import write_vtab_task
from src.errors import UserError
from src.eval import evaluate
from src.train import build_finetuner, train
from tests import processes
from tests.conftest import SimulatedCrash, crash_in_epoch

ROOT = Path(__file__).resolve().parents[1]
TINY_SWIN = (
    "backbone=swin_base_patch4",
    "backbone.name=swin_tiny_patch4_window7_224",
    "backbone.weights=random",
    "backbone.kwargs={depths:[1,1,2,1],embed_dim:24,num_heads:[1,1,1,1],window_size:2}",
    "backbone.drop_path=0.0",
    "data.img_size=32",
)
# Keep the tiny runs quick: VPT's 50 prompts and VeRA's rank 256 are far larger than a 32-px ViT.
SMALL = {
    "vpt_deep": ["adapter.num_tokens=2"],
    "vpt_shallow": ["adapter.num_tokens=2"],
    "vera": ["adapter.rank=8"],
}
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A separable task (each class its own hue and stripe direction, src/data/synthetic.py)."""
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(
        root, "toy", num_classes=NUM_CLASSES, n_train=16, n_val=8, n_test=24, img_size=32
    )
    return root


def test_a_field_sweeps_like_any_config_key(compose_cfg):
    cfg = compose_cfg("adapter=adaptformer", "adapter.dim=4")
    assert OmegaConf.to_container(cfg.adapter) == {
        "name": "adaptformer",
        "blocks": None,
        "train_head": True,
        "dim": 4,
        "scale": 0.1,
        "act": "relu",
    }


def test_hydra_refuses_a_field_the_method_does_not_have(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="adapter.dim"):
        compose_cfg("adapter=lora", "adapter.dim=4")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("adapter=lora", "adapter.rank=four")  # typed: an int field


def test_an_old_run_config_with_an_unknown_key_is_one_line():
    with pytest.raises(UserError, match="adapter 'lora' has no field dim; its fields are"):
        from src.adapters import make_config

        make_config(OmegaConf.create({"name": "lora", "dim": 3}))


def test_tiny_swin_from_the_command_line_runs_hierarchical_pace(compose_cfg):
    cfg = compose_cfg(*TINY_SWIN, "adapter=lora_add", "pace.schedule=hierarchical", "sigma=0.7")
    model = build_finetuner(cfg, num_classes=3).model
    blocks = iter_blocks(model)
    assert len(blocks) == 5
    first = sorted({m.branch_noise.sigma for _, m in branch_modules(blocks[0])})
    assert first == [pytest.approx(0.7)]  # block 0 is perturbed under this schedule


def epoch_column(run_dir: Path, key: str) -> list[float]:
    """One value per training epoch from the run's summary.csv."""
    with (run_dir / "summary.csv").open() as f:
        return [float(row[key]) for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "pace", "fast"])
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_method_learns_and_eval_reproduces_it(compose_cfg, data_root, name, mode):
    cfg = compose_cfg(
        "debug=tiny",
        "backbone.kwargs={depth:2}",  # two blocks: every site of a block is still there
        f"adapter={name}",
        *SMALL.get(name, []),
        f"pace={mode}",
        f"data.root={data_root}",
        "data.task=toy",
        f"data.num_classes={NUM_CLASSES}",
        "data.batch_size=8",
        "trainer.max_epochs=2",  # 3 steps each (train800val200: 24 images)
        "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false",
        "cpu_threads=1",  # one summation order whatever the machine's load
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["adapter_config"]["name"] == name
    # It learns: the task loss (cross-entropy; PACE's term is not the task's) of the second epoch
    # is clearly below the first's (at most 0.81 of it, measured over every case), and the test
    # accuracy is well above chance: at least 12 of the 24 images where chance finds 8 (the
    # lowest measured, with one thread: 15).
    ce = epoch_column(run_dir, "train/ce")
    assert len(ce) == 2 and ce[1] < 0.9 * ce[0], ce
    assert metrics["test/acc"] >= 1.5 / NUM_CLASSES, metrics
    # src.eval rebuilds the model from adapter.safetensors alone and finds the same test metrics.
    evaluated = evaluate(compose_cfg(f"run_dir={run_dir}", config_name="eval"))
    tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert tested and {k: evaluated[k] for k in tested} == pytest.approx(tested, abs=1e-6)


@pytest.mark.slow
def test_glob_multirun_trains_every_method(tmp_path, data_root):
    args = [
        "-m",
        "debug=tiny",  # debug=fast has no logger, which its LearningRateMonitor refuses
        "adapter=glob(*)",
        "backbone.kwargs={depth:2}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"data.root={data_root}",
        "data.task=toy",
        f"data.num_classes={NUM_CLASSES}",
        "callbacks.progress_bar=null",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    proc = processes.run("src.train", *args, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = {
        json.loads(p.read_text())["adapter"] for p in (tmp_path / "sweep").glob("*/results.json")
    }
    assert done == set(ADAPTERS)


@pytest.mark.slow
def test_grft_resume_restores_the_selection_without_a_second_pass(
    compose_cfg, data_root, tmp_path, capfd
):
    from omegaconf import open_dict
    from safetensors.torch import load_file

    overrides = (
        "debug=tiny",
        "adapter=grft",
        "adapter.budget=0.01",
        f"data.root={data_root}",
        "data.task=toy",
        f"data.num_classes={NUM_CLASSES}",
        "data.batch_size=8",
        "trainer.max_epochs=3",
        "callbacks.progress_bar=null",
        "test=false",
        "pace=pace",
    )

    def run(folder, *extra, crash=False):
        cfg = compose_cfg(*overrides, *extra)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / folder)
        return train(crash_in_epoch(cfg, 1) if crash else cfg)

    run("straight")
    with pytest.raises(SimulatedCrash):
        run("resumed", crash=True)
    capfd.readouterr()
    run("resumed", "ckpt_path=last")
    assert "GRFT scoring" not in capfd.readouterr().err  # restored from last.ckpt, not re-scored
    a = load_file(str(tmp_path / "straight" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter.safetensors"))
    assert a.keys() == b.keys() and any(k.endswith(".rows") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
