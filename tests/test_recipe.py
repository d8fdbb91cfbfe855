"""The recipe group: each switch against its definition, and `recipe=paper` reaching every consumer.

docs/recipe.md is the table these tests hold the code to.
"""

import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file
from torch import nn

from src.backbones.factory import reset_head
from src.data import VTABDataModule
from src.data.synthetic import write_vtab_task
from src.errors import UserError
from src.finetuner import FineTuner
from src.network import build_model
from src.pace import FastPACE, LazyPACE, MultiplicativeNoise, build_regulariser, paired_batch
from src.pace.droppath import PairedDropPath
from src.pace.noise import noise_modules
from src.schedule import epoch_cosine_scheduler, step_cosine_scheduler
from src.train import build_finetuner, train
from tests.conftest import SimulatedCrash, crash_in_epoch, quiet_trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPE_KEYS = [
    "drop_path_scale",
    "fast_history_init",
    "lazy_interval",
    "decay_1d",
    "lr_schedule",
    "drop_last",
    "head_init",
    "noise_dtype",
    "grad_norm_every",
]
# recipe key -> (pace group that uses it, the key it feeds)
CONSUMERS = {
    "drop_path_scale": ("pace", "pace.drop_path_scale"),
    "fast_history_init": ("fast", "pace.history_init"),
    "lazy_interval": ("lazy", "pace.interval"),
    "decay_1d": ("pace", "optim.decay_1d"),
    "lr_schedule": ("pace", "optim.schedule"),
    "drop_last": ("pace", "data.drop_last"),
    "noise_dtype": ("pace", "pace.noise_dtype"),
    "grad_norm_every": ("pace", "diagnostics.grad_norm_every"),
}
PAPER = {
    "drop_path_scale": "batch_mean",
    "fast_history_init": "zeros",
    "lazy_interval": 1,
    "decay_1d": True,
    "lr_schedule": "epoch",
    "drop_last": True,
    "head_init": "torch_default",
    "noise_dtype": "float32",
    "grad_norm_every": 0,
}
PROJECT = {
    "drop_path_scale": "keep_prob",
    "fast_history_init": "unseen",
    "lazy_interval": 2,
    "decay_1d": False,
    "lr_schedule": "step",
    "drop_last": False,
    "head_init": "trunc_normal",
    "noise_dtype": "branch",
    "grad_norm_every": "epoch",
}
TINY = ("backbone=vit_tiny_patch16", "data.img_size=32", "+backbone.kwargs.depth=2")


def tiny_model(drop_path=0.0, seed=0):
    torch.manual_seed(seed)
    return build_model(
        4,
        "vit_tiny_patch16_224",
        "lora_mul_vpt_add",
        rank=2,
        img_size=32,
        drop_path=drop_path,
        timm_kwargs={"depth": 2},
    )


# ---------------------------------------------------------------- the config group


def test_both_recipes_name_the_same_switches():
    for name in ("paper", "project"):
        keys = list(yaml.safe_load((ROOT / "conf" / "recipe" / f"{name}.yaml").read_text()))
        assert keys == RECIPE_KEYS, name


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ((), PROJECT),
        (("recipe=paper",), PAPER),
        (("experiment=vtab_pace",), PAPER),
        (("experiment=vtab_baseline",), PAPER),
        (("experiment=demo",), {**PROJECT, "grad_norm_every": "epoch"}),
    ],
)
def test_recipe_values_reach_every_consumer(compose_cfg, overrides, expected):
    for key, (pace, consumer) in CONSUMERS.items():
        cfg = compose_cfg(*overrides, f"pace={pace}")
        assert cfg.recipe[key] == expected[key], key
        assert OmegaConf.select(cfg, consumer) == expected[key], consumer


def test_one_switch_flips_alone(compose_cfg):
    cfg = compose_cfg("experiment=vtab_pace", "recipe.drop_last=false", "pace=lazy")
    assert cfg.data.drop_last is False
    assert cfg.pace.interval == 1 and cfg.optim.schedule == "epoch"  # the others stay official


def test_docs_table_names_every_switch():
    text = (ROOT / "docs" / "recipe.md").read_text()
    for key in RECIPE_KEYS:
        assert f"`recipe.{key}`" in text, key


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(drop_path_scale="batch"), "unknown recipe.drop_path_scale 'batch'"),
        (dict(history_init="zero"), "unknown recipe.fast_history_init 'zero'"),
        (dict(noise_dtype="fp16"), "unknown recipe.noise_dtype 'fp16'"),
    ],
)
def test_bad_pace_recipe_values_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        build_regulariser(tiny_model(), "pace", **kwargs)


# ---------------------------------------------------------------- 1. drop-path scaling


@pytest.mark.parametrize("seed", range(5))
def test_batch_mean_mask_has_mean_exactly_one(seed):
    torch.manual_seed(seed)
    layer = PairedDropPath(0.3, "batch_mean").train()
    out = layer(torch.ones(8, 5, 3))
    per_sample = out[:, 0, 0]
    kept = int((per_sample > 0).sum())
    assert 0 < kept < 8  # these seeds draw a mixed batch
    assert per_sample.mean().item() == pytest.approx(1.0, abs=1e-6)
    # every kept sample is scaled by B / kept, the same factor for all of them
    assert per_sample[per_sample > 0].tolist() == [pytest.approx(8 / kept)] * kept


def test_keep_prob_mask_scales_kept_samples_by_one_over_keep():
    torch.manual_seed(0)
    out = PairedDropPath(0.3, "keep_prob").train()(torch.ones(64, 2))[:, 0]
    kept = out[out > 0].tolist()
    assert 0 < len(kept) < 64 and kept == [pytest.approx(1 / 0.7)] * len(kept)


@pytest.mark.parametrize("scale", ["keep_prob", "batch_mean"])
def test_paired_copies_share_one_mask(scale):
    torch.manual_seed(1)
    layer = PairedDropPath(0.5, scale).train()
    layer.paired = True
    out = layer(torch.ones(16, 4))[:, 0]
    first, second = out.chunk(2)
    assert torch.equal(first, second)
    assert 0 < int((first > 0).sum()) < 8
    if scale == "batch_mean":
        assert first.mean().item() == pytest.approx(1.0, abs=1e-6)
        assert out.mean().item() == pytest.approx(1.0, abs=1e-6)


def test_batch_mean_with_every_sample_dropped_gives_zeros_not_nan():
    torch.manual_seed(0)
    out = PairedDropPath(0.999999, "batch_mean").train()(torch.ones(4, 3))
    assert torch.equal(out, torch.zeros(4, 3))


@pytest.mark.parametrize("mode", ["pace", "lazy", "fast"])
def test_every_pace_mode_uses_the_chosen_drop_path_scale(mode):
    model = tiny_model(drop_path=0.5)
    build_regulariser(model, mode, sigma=0.0, drop_path_scale="batch_mean")
    layers = [m for m in model.modules() if isinstance(m, PairedDropPath)]
    # timm's drop rate rises linearly from 0 in block 0: only block 1's two DropPaths exist
    assert len(layers) == 2 and {m.scale for m in layers} == {"batch_mean"}
    if mode == "pace":  # σ = 0: the two copies differ only if their masks differ
        model.train()
        x = torch.randn(4, 3, 32, 32)
        with paired_batch(model):
            f1, f2 = model(torch.cat([x, x])).chunk(2)
        torch.testing.assert_close(f1, f2)


# ---------------------------------------------------------------- 2. PACE-fast history init


def test_zero_history_makes_first_visit_term_the_squared_logit_norm():
    fast = FastPACE(lam=0.5, history_init="zeros")
    fast.prepare(num_train=5, num_classes=3)
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    first = fast(nn.Identity(), f, torch.tensor([2, 0]), torch.tensor([4, 1]), step=0)
    assert first.consistency.item() == pytest.approx((14 + 2) / 2)  # mean of ‖f‖²
    assert first.loss.item() == pytest.approx(first.ce.item() + 0.5 * 8)
    second = fast(nn.Identity(), f + 1, torch.tensor([2, 0]), torch.tensor([4, 1]), step=1)
    assert second.consistency.item() == pytest.approx(3.0)  # previous visit, every class +1


def test_unseen_history_skips_first_visits():
    fast = FastPACE(lam=0.5, history_init="unseen")
    fast.prepare(num_train=5, num_classes=3)
    first = fast(nn.Identity(), torch.ones(2, 3), torch.tensor([2, 0]), torch.tensor([4, 1]), 0)
    assert first.consistency.item() == 0.0


# ---------------------------------------------------------------- 3. lazy interval


def test_lazy_interval_one_runs_pace_on_half_the_batch_every_step(compose_cfg):
    cfg = compose_cfg("recipe=paper", "pace=lazy", *TINY)
    lazy = build_finetuner(cfg, num_classes=4).regulariser
    assert isinstance(lazy, LazyPACE) and lazy.interval == 1
    seen = []
    model = nn.Identity()
    model.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    x, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    parts = [lazy(model, x, y, torch.arange(8), step) for step in range(3)]
    assert seen == [8, 8, 8]  # [first half; first half] at every step
    assert all(len(p.targets) == 4 for p in parts)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_lazy_alternates_per_batch_whatever_the_gradient_accumulation(
    datamodule_factory, accumulate
):
    """The official loop counts iterations: with 2 batches per optimiser step, lazy's PACE
    and single-pass batches still alternate, and the count runs on across epochs."""
    model = tiny_model()
    lazy = build_regulariser(model, "lazy", sigma=0.5, lam=1.0, interval=2)
    seen = []
    forward = lazy.forward
    lazy.forward = lambda *args: seen.append(args[-1]) or forward(*args)
    finetuner = FineTuner(model, lazy, num_classes=4)
    trainer = fit(finetuner, datamodule_factory(), epochs=2, accumulate_grad_batches=accumulate)
    assert seen == list(range(10))  # 36 training images at batch 8: 5 batches per epoch
    # Lightning steps after every `accumulate` batches and at the end of each epoch
    assert trainer.global_step == 2 * math.ceil(5 / accumulate)


# ---------------------------------------------------------------- the Lightning pieces


@pytest.fixture(scope="module")
def datamodule_factory(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root, "toy", num_classes=4, n_train=36, n_val=20, n_test=8)

    def make(**kwargs):
        return VTABDataModule(
            str(root),
            "toy",
            protocol="tune",
            batch_size=8,
            num_workers=0,
            img_size=32,
            num_classes=4,
            **kwargs,
        )

    return make


class RecordLR(Callback):
    def __init__(self):
        self.per_epoch: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.per_epoch.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.per_epoch[-1].append(trainer.optimizers[0].param_groups[0]["lr"])


def fit(finetuner, datamodule, epochs=1, callbacks=(), **kwargs):
    trainer = quiet_trainer(
        max_epochs=epochs,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=list(callbacks),
        **kwargs,
    )
    trainer.fit(finetuner, datamodule=datamodule)
    return trainer


def make_finetuner(**kwargs):
    model = tiny_model()
    return model, FineTuner(model, build_regulariser(model, "none"), num_classes=4, **kwargs)


# ---------------------------------------------------------------- 4. weight decay


@pytest.mark.parametrize("decay_1d", [False, True])
def test_decayed_and_undecayed_parameter_sets(datamodule_factory, decay_1d):
    model, finetuner = make_finetuner(weight_decay=0.05, decay_1d=decay_1d)
    trainer = fit(finetuner, datamodule_factory(), limit_train_batches=1)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {"decayed": set(), "undecayed": set()}
    for group in trainer.optimizers[0].param_groups:
        kind = "decayed" if group["weight_decay"] == 0.05 else "undecayed"
        assert group["weight_decay"] in (0.0, 0.05)
        groups[kind] |= {names[id(p)] for p in group["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    one_d = {n for n, p in trainable.items() if p.ndim == 1}
    assert {"head.bias", "blocks.0.attn.qkv.delta_b"} <= one_d
    if decay_1d:  # the official: AdamW over every trainable tensor
        assert groups == {"decayed": set(trainable), "undecayed": set()}
    else:
        assert groups == {"decayed": set(trainable) - one_d, "undecayed": one_d}


# ---------------------------------------------------------------- 5. learning-rate schedule


def official_epoch_lrs(lr, epochs, warmup, warmup_lr, min_lr):
    """The official training loop's rates, computed from their definition (not from timm).

    The official loop builds timm's ``CosineLRScheduler(t_initial=epochs, warmup_t=warmup, …)``
    and calls ``step(epoch)`` after each epoch, so epoch e trains at f(e − 1) (epoch 0 at
    f(0), the warm-up start), where f(t) is a linear warm-up from ``warmup_lr`` for t < warmup
    and, after it, a half cosine from ``lr`` to ``min_lr`` over the whole run, measured from
    t = 0 (timm's ``warmup_prefix=False``: the cosine does not restart after the warm-up).
    """

    def f(t):
        if t < warmup:
            return warmup_lr + t * (lr - warmup_lr) / warmup
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / epochs))

    return [f(max(epoch - 1, 0)) for epoch in range(epochs)]


def test_per_epoch_lrs_equal_timms_scheduler_in_training(datamodule_factory):
    _, finetuner = make_finetuner(
        lr=1e-2, warmup_epochs=2, warmup_lr=1e-6, min_lr=1e-5, schedule="epoch"
    )
    record = RecordLR()
    fit(finetuner, datamodule_factory(), epochs=6, callbacks=[record], limit_train_batches=2)
    assert [len(set(e)) for e in record.per_epoch] == [1] * 6  # constant within an epoch
    measured = [e[0] for e in record.per_epoch]
    assert measured == pytest.approx(official_epoch_lrs(1e-2, 6, 2, 1e-6, 1e-5), rel=1e-12)
    assert measured[0] == measured[1] == 1e-6


def test_official_schedule_over_300_epochs():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = epoch_cosine_scheduler(optimizer, 300, 10, 1e-6, 1e-5)
    lrs = []
    for epoch in range(300):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch)
    assert lrs == pytest.approx(official_epoch_lrs(1e-3, 300, 10, 1e-6, 1e-5), rel=1e-12)
    assert lrs[0] == lrs[1] == 1e-6
    assert max(range(300), key=lrs.__getitem__) == 11
    assert lrs[11] / 1e-3 == pytest.approx(0.9973, abs=1e-4)
    # The project's per-step schedule spends 3.4 % more learning rate over the same 300 epochs.
    steps_per_epoch = 16
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    total, warmup = 300 * steps_per_epoch, 10 * steps_per_epoch
    stepped = step_cosine_scheduler(optimizer, total, warmup, 1e-6, 1e-5)
    per_step = []
    for s in range(300 * steps_per_epoch):
        stepped.step_update(num_updates=s)
        per_step.append(optimizer.param_groups[0]["lr"])
    assert sum(per_step) / steps_per_epoch / sum(lrs) == pytest.approx(1.034, abs=5e-4)


@pytest.mark.parametrize(
    "epochs,warmup,message",
    [(10, 0.5, "whole number of optim.warmup_epochs"), (None, 2, "trainer.max_epochs >= 1")],
)
def test_epoch_schedule_refuses_what_it_cannot_follow(epochs, warmup, message):
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(UserError, match=message):
        epoch_cosine_scheduler(optimizer, epochs, warmup, 1e-6, 1e-5)


def test_unknown_lr_schedule_is_a_user_error():
    with pytest.raises(UserError, match="unknown recipe.lr_schedule 'cosine'"):
        make_finetuner(schedule="cosine")


# ---------------------------------------------------------------- 6. last partial batch


@pytest.mark.parametrize("drop_last,steps", [(False, 5), (True, 4)])
def test_drop_last_sets_steps_per_epoch(datamodule_factory, drop_last, steps):
    datamodule = datamodule_factory(drop_last=drop_last)  # 36 samples, batch 8
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == steps
    assert len(datamodule.val_dataloader()) == 3  # 20 samples: evaluation never drops
    _, finetuner = make_finetuner()
    assert fit(finetuner, datamodule).global_step == steps


# ---------------------------------------------------------------- 7. head initialisation


def test_torch_default_head_is_reset_classifiers_plain_linear():
    model = tiny_model()
    state = torch.get_rng_state()
    reset_head(model, 7, "torch_default")
    torch.set_rng_state(state)
    reference = nn.Linear(192, 7)
    assert torch.equal(model.head.weight, reference.weight)
    assert torch.equal(model.head.bias, reference.bias)


def test_trunc_normal_head_has_std_002_weights_and_zero_bias():
    model = tiny_model()
    reset_head(model, 7, "trunc_normal")
    model2 = tiny_model()
    state = torch.get_rng_state()
    reset_head(model2, 7, "trunc_normal")
    torch.set_rng_state(state)
    reference = nn.Linear(192, 7)
    nn.init.trunc_normal_(reference.weight, std=0.02)
    assert torch.equal(model2.head.weight, reference.weight)
    assert torch.equal(model.head.bias, torch.zeros(7))


@pytest.mark.parametrize("recipe,bias_is_zero", [("project", True), ("paper", False)])
def test_head_init_reaches_the_model(compose_cfg, recipe, bias_is_zero):
    model = build_finetuner(compose_cfg(f"recipe={recipe}", *TINY), num_classes=4).model
    weight, bound = model.head.weight, 1 / 192**0.5  # nn.Linear's U(±1/√fan_in)
    assert bool(torch.all(model.head.bias == 0)) is bias_is_zero
    if bias_is_zero:
        assert weight.std().item() == pytest.approx(0.02, rel=0.15)
    else:
        assert weight.abs().max() <= bound and weight.std().item() == pytest.approx(
            bound / 3**0.5, rel=0.15
        )


# ---------------------------------------------------------------- 8. noise dtype


@pytest.mark.parametrize("noise_dtype,expected", [("branch", torch.bfloat16), ("float32", None)])
def test_noise_dtype_under_mixed_precision(noise_dtype, expected):
    model = tiny_model()
    build_regulariser(model, "pace", sigma=1.0, noise_dtype=noise_dtype)
    modules = noise_modules(model)
    assert len(modules) == 2 * 4 + 1  # 4 adapted linears per block, and the head
    branch = torch.ones(2, 5, 6, dtype=torch.bfloat16)
    for noise in modules:
        assert noise.train().sample(branch).dtype == (expected or torch.float32)
    # float32 noise promotes the low-precision branch, as the official code's noise does
    active = [m for m in modules if m.sigma > 0]  # block 0 has σ = 0 and passes the branch through
    assert {m(branch).dtype for m in active} == {expected or torch.float32}
    assert MultiplicativeNoise(1.0).train().sample(branch).dtype == torch.bfloat16


# ---------------------------------------------------------------- all at once, through src.train


def test_paper_recipe_trains_end_to_end(compose_cfg, tmp_path):
    write_vtab_task(tmp_path / "data", "toy", num_classes=4, n_train=36, n_val=8, n_test=8)
    cfg = compose_cfg(
        "experiment=vtab_pace",
        "debug=tiny",
        "pace=fast",
        f"data.root={tmp_path / 'data'}",
        "data.task=toy",
        "data.num_classes=4",
        "data.batch_size=8",
        "backbone.drop_path=0.1",
        "trainer.max_epochs=2",
        "optim.warmup_epochs=1",
        "callbacks.progress_bar=null",
        "logger=csv",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    rows = (Path(cfg.paths.output_dir) / "csv").rglob("metrics.csv")
    header = next(iter(rows)).read_text().splitlines()[0].split(",")
    assert "train/grad_norm" not in header  # recipe=paper logs it only when asked
    assert "train/consistency_step" in header


def test_paper_recipe_resumes_to_the_same_end(compose_cfg, tmp_path, capsys):
    # The per-epoch timm scheduler and PACE-fast's history must both come back from last.ckpt.
    write_vtab_task(tmp_path / "data", "toy", num_classes=4, n_train=36, n_val=8, n_test=8)
    overrides = (
        "recipe=paper",
        "debug=tiny",
        "pace=fast",
        "lam=0.1",
        f"data.root={tmp_path / 'data'}",
        "data.task=toy",
        "data.num_classes=4",
        "data.batch_size=8",
        "backbone.drop_path=0.2",
        "+backbone.kwargs.depth=2",
        "trainer.max_epochs=4",
        "optim.warmup_epochs=2",
        "optim.lr=1e-2",
        "callbacks.progress_bar=null",
        "test=false",
    )

    def run(name, *extra, crash=None):
        cfg = compose_cfg(*overrides, *extra)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
        train(cfg if crash is None else crash_in_epoch(cfg, crash))
        return load_file(str(tmp_path / name / "adapter.safetensors"))

    straight = run("straight")
    with pytest.raises(SimulatedCrash):
        run("resumed", crash=2)
    capsys.readouterr()
    resumed = run("resumed", "ckpt_path=last")
    said = capsys.readouterr().err
    assert "resuming from" in said and "last.ckpt" in said
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], rtol=0, atol=1e-6, msg=key)
