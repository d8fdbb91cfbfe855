"""The LightningModule's diagnostics and learning-rate schedule."""

import math

import pytest
import torch
import torch.nn.functional as F

from src.data import VTABDataModule
from src.data.synthetic import write_vtab_task
from src.errors import UserError
from src.finetuner import FineTuner
from src.network import build_model
from src.pace import build_regulariser
from src.schedule import step_cosine_scheduler
from tests.conftest import quiet_trainer as shared_quiet_trainer


def make_finetuner(mode="pace", **kwargs):
    torch.manual_seed(0)
    model = build_model(
        4, "vit_tiny_patch16_224", "lora_mul_vpt_add", rank=2, img_size=32, timm_kwargs={"depth": 2}
    )
    return FineTuner(
        model,
        build_regulariser(model, mode, sigma=0.5, lam=1.0),
        num_classes=4,
        **{"lr": 1e-2, "warmup_epochs": 0, **kwargs},
    )


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root, "toy", num_classes=4, n_train=32, n_val=16, n_test=16)
    return VTABDataModule(
        str(root), "toy", protocol="tune", batch_size=8, num_workers=0, img_size=32, num_classes=4
    )


def quiet_trainer(**kwargs):
    # inference_mode=False: one module goes validate -> fit -> validate here, and metric states
    # created under inference mode could not be updated by the fit loop's validation afterwards.
    return shared_quiet_trainer(inference_mode=False, **kwargs)


def test_fp_distance_is_zero_at_init_and_grows_with_training(datamodule):
    finetuner = make_finetuner()
    before = quiet_trainer().validate(finetuner, datamodule=datamodule, verbose=False)[0]
    assert before["val/fp_distance"] == 0.0
    quiet_trainer(max_epochs=2, num_sanity_val_steps=0).fit(finetuner, datamodule=datamodule)
    after = quiet_trainer().validate(finetuner, datamodule=datamodule, verbose=False)[0]
    assert after["val/fp_distance"] > 1e-3


def test_fp_distance_is_the_mean_squared_logit_distance(datamodule):
    finetuner = make_finetuner()
    quiet_trainer(max_epochs=1, num_sanity_val_steps=0).fit(finetuner, datamodule=datamodule)
    finetuner.eval()
    x, _, _ = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        tuned = finetuner(x)
        expected = (tuned - finetuner._pretrained_logits(x)).pow(2).sum(-1).mean()
        # The branch switch must restore the adapters afterwards.
        torch.testing.assert_close(finetuner(x), tuned)
    assert expected > 0
    logged = quiet_trainer(limit_val_batches=1).validate(finetuner, datamodule=datamodule)[0]
    assert logged["val/fp_distance"] == pytest.approx(expected.item(), rel=1e-5)


def test_grad_norm_is_the_ce_gradient_norm_over_trainable_parameters():
    finetuner = make_finetuner(mode="none")
    with torch.no_grad():  # non-zero adapters so every trainable tensor gets a gradient
        for name, p in finetuner.model.named_parameters():
            if p.requires_grad and ".d_" in name:
                p.normal_(0, 0.05)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    ce = F.cross_entropy(finetuner(x), y)
    measured = finetuner._ce_grad_norm(ce)
    ce.backward()
    grads = [p.grad for p in finetuner.model.parameters() if p.requires_grad]
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    torch.testing.assert_close(measured, expected)


def test_warmup_then_cosine():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = step_cosine_scheduler(optimizer, 110, 10, warmup_lr=1e-6, min_lr=1e-5)

    def lr_after(steps: int) -> float:
        scheduler.step_update(num_updates=steps)
        return optimizer.param_groups[0]["lr"]

    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)  # before the first step
    assert lr_after(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert lr_after(10) == pytest.approx(1e-3)
    assert lr_after(60) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert lr_after(110) == pytest.approx(1e-5)
    assert math.isclose(lr_after(500), 1e-5)


def test_fit_moves_the_rate_every_step(datamodule):
    finetuner = make_finetuner(mode="none", lr=1e-3, warmup_epochs=1, warmup_lr=1e-6, min_lr=1e-5)
    seen = []
    step = finetuner.training_step

    def recording_step(*args):
        seen.append(finetuner.optimizers().param_groups[0]["lr"])
        return step(*args)

    finetuner.training_step = recording_step
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(finetuner, datamodule=datamodule)
    # 6 steps, 3 of warm-up: 1e-6 → 1e-3 linearly, then the cosine over the other 3.
    warm = [1e-6 + (1e-3 - 1e-6) * s / 3 for s in range(3)]
    cosine = [1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * s / 3)) for s in range(3)]
    assert seen == pytest.approx(warm + cosine)


@pytest.mark.parametrize(("every", "computed"), [("epoch", 2), (2, 3), (0, 0)])
def test_grad_norm_cadence(datamodule, every, computed):
    # 3 batches x 2 epochs = 6 steps: once per epoch, at steps 2, 4 and 6, or never.
    finetuner = make_finetuner(mode="none", grad_norm_every=every)
    calls = []
    measure = finetuner._ce_grad_norm
    finetuner._ce_grad_norm = lambda ce: calls.append(1) or measure(ce)  # count real calls
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(finetuner, datamodule=datamodule)
    assert len(calls) == computed
    assert ("train/grad_norm" in trainer.logged_metrics) == (computed > 0)


def test_bad_grad_norm_cadence_is_a_user_error():
    with pytest.raises(UserError, match="grad_norm_every must be 'epoch', 0"):
        make_finetuner(grad_norm_every="sometimes")
