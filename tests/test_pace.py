"""Noise, σ schedule, shared drop-path masks and the three consistency losses."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from src.adapters import branch_modules, inject
from src.errors import UserError
from src.pace import (
    PACE,
    FastPACE,
    LazyPACE,
    MultiplicativeNoise,
    build_regulariser,
    paired_batch,
    sigma_schedule,
)
from src.pace.noise import noise_modules


def tiny_vit(depth=2, drop_path=0.0):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=4,
        img_size=32,
        depth=depth,
        drop_path_rate=drop_path,
    )


# ---------------------------------------------------------------- noise and schedule


def test_noise_statistics_and_shape():
    torch.manual_seed(0)
    noise = MultiplicativeNoise(0.5).train()
    z = noise.sample(torch.empty(4000, 9, 50))
    assert z.shape == (4000, 1, 50)
    assert abs(z.mean().item() - 1.0) < 0.01
    assert abs(z.std().item() - 0.5) < 0.01


def test_token_noise_has_one_value_per_token():
    z = MultiplicativeNoise(1.0, shape="token").train().sample(torch.empty(3, 9, 5))
    assert z.shape == (3, 9, 5)


def test_no_noise_in_eval_mode_or_at_sigma_zero():
    branch = torch.randn(2, 3, 4)
    assert torch.equal(MultiplicativeNoise(2.0).eval()(branch), branch)
    assert torch.equal(MultiplicativeNoise(0.0).train()(branch), branch)
    assert not torch.equal(MultiplicativeNoise(2.0).train()(branch), branch)


def test_channel_noise_is_shared_across_tokens():
    torch.manual_seed(0)
    out = MultiplicativeNoise(1.0).train()(torch.ones(2, 5, 3))
    assert torch.equal(out, out[:, :1].expand_as(out))
    assert not torch.equal(out[0], out[1])


def test_vit_schedule_for_twelve_blocks():
    s = 0.6
    sigmas = sigma_schedule(s, 12)
    expected = [0.0, s] + [s * (13 - k) / 12 for k in range(2, 12)] + [s / 12]
    assert sigmas == pytest.approx(expected)
    assert sigmas[2] == pytest.approx(11 * s / 12) and sigmas[11] == pytest.approx(2 * s / 12)


def test_hierarchical_schedule_noises_block_zero():
    assert sigma_schedule(1.0, 3, "hierarchical") == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_attach_noise_puts_schedule_on_blocks_and_head():
    model = inject(tiny_vit(depth=4), "lora_mul_vpt_add", rank=2)
    build_regulariser(model, "pace", sigma=0.8, lam=1.0)
    for k, block in enumerate(model.blocks):
        expected = sigma_schedule(0.8, 4)[k]
        assert {layer.branch_noise.sigma for _, layer in branch_modules(block)} == {expected}
    assert model.head.branch_noise.sigma == pytest.approx(0.8 / 4)


def test_head_logits_are_multiplied_by_noise_in_training_only():
    model = inject(tiny_vit(), "lora_add", rank=2)
    build_regulariser(model, "pace", sigma=1.0, lam=1.0)
    for m in noise_modules(model):  # keep only the head's noise
        m.sigma = 0.0
    model.head.branch_noise.sigma = 1.0
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    clean = model(x)
    model.train()
    torch.manual_seed(3)
    noisy = model(x)
    ratio = noisy / clean  # one z per sample and class
    assert not torch.allclose(ratio, torch.ones_like(ratio))
    model.eval()
    torch.testing.assert_close(model(x), clean)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(sigma=-0.1), "sigma must be >= 0"),
        (dict(lam=-1.0), "lam must be >= 0"),
        (dict(mode="fastest"), "unknown pace mode 'fastest'.*fast, lazy, none, pace"),
    ],
)
def test_bad_pace_settings(kwargs, message):
    model = inject(tiny_vit(), "lora_add", rank=2)
    with pytest.raises(UserError, match=message):
        build_regulariser(model, **{"mode": "pace", **kwargs})


# ---------------------------------------------------------------- losses on hand-computed tensors


class RowOffset(nn.Module):
    """logits = x + row_index · c: the two copies of ``[x; x]`` differ by exactly B·c."""

    def __init__(self, c=0.1):
        super().__init__()
        self.c = c
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return x + self.c * torch.arange(x.shape[0], dtype=x.dtype)[:, None]


def hand_ce(logits, y):
    losses = [row.exp().sum().log() - row[t] for row, t in zip(logits, y, strict=True)]
    return torch.stack(losses).mean()


def test_pace_loss_equals_formula():
    x = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    y = torch.tensor([0, 1])
    parts = PACE(lam=0.3)(RowOffset(0.1), x, y, torch.arange(2), step=0)
    f1 = x + 0.1 * torch.tensor([[0.0], [1.0]])
    consistency = 3 * (2 * 0.1) ** 2  # every class differs by B·c = 0.2
    assert parts.ce.item() == pytest.approx(hand_ce(f1, y).item(), rel=1e-6)
    assert parts.consistency.item() == pytest.approx(consistency, rel=1e-6)
    assert parts.loss.item() == pytest.approx(hand_ce(f1, y).item() + 0.3 * consistency, rel=1e-6)


def test_lazy_applies_pace_to_first_half_on_interval_steps():
    model = RowOffset(0.1)
    lazy = LazyPACE(lam=1.0, interval=3)
    x, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    losses = [lazy(model, x, y, torch.arange(8), step) for step in range(6)]
    assert model.batch_sizes == [8, 8, 8, 8, 8, 8]  # [half; half] = 8 on PACE steps, x otherwise
    pace_steps = [step for step, p in enumerate(losses) if p.consistency.item() > 0]
    assert pace_steps == [0, 3]
    assert all(len(losses[s].targets) == 4 for s in pace_steps)
    torch.testing.assert_close(losses[0].targets, y[:4])
    expected_pace = PACE(lam=1.0)(RowOffset(0.1), x[:4], y[:4], None, 0)
    torch.testing.assert_close(losses[3].loss, expected_pace.loss)
    torch.testing.assert_close(losses[1].loss, F.cross_entropy(RowOffset(0.1)(x), y))


def test_fast_uses_previous_visit_and_skips_first_visits():
    fast = FastPACE(lam=0.5)
    fast.prepare(num_train=5, num_classes=3)
    model = nn.Identity()
    x1 = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    first = fast(model, x1, torch.tensor([2, 0]), torch.tensor([4, 1]), step=0)
    assert first.consistency.item() == 0.0  # nothing seen: no pull towards zero
    assert first.loss.item() == pytest.approx(first.ce.item())
    x2 = torch.tensor([[1.5, 2.0, 2.0], [9.0, 9.0, 9.0]])
    second = fast(model, x2, torch.tensor([2, 1]), torch.tensor([4, 3]), step=1)
    # index 4 was seen with [1,2,3]; index 3 is new and contributes nothing; mean over the batch.
    expected = ((0.5**2 + 0 + 1.0**2) + 0.0) / 2
    assert second.consistency.item() == pytest.approx(expected)
    assert second.loss.item() == pytest.approx(second.ce.item() + 0.5 * expected)
    torch.testing.assert_close(fast.history[3], x2[1])
    assert fast.seen.tolist() == [False, True, False, True, True]


def test_fast_history_is_saved_in_state_dict():
    fast = FastPACE(lam=1.0)
    fast.prepare(4, 2)
    fast(nn.Identity(), torch.ones(1, 2), torch.tensor([0]), torch.tensor([2]), 0)
    restored = FastPACE(lam=1.0)
    restored.prepare(4, 2)
    restored.load_state_dict(fast.state_dict())
    assert restored.seen.tolist() == [False, False, True, False]


# ---------------------------------------------------------------- drop-path shared by both copies


def test_both_copies_share_drop_path_masks():
    model = inject(tiny_vit(depth=4, drop_path=0.5), "lora_add", rank=2)
    build_regulariser(model, "pace", sigma=0.0, lam=1.0)  # σ = 0: only drop-path differs
    model.train()
    x = torch.randn(6, 3, 32, 32)
    torch.manual_seed(0)
    with paired_batch(model):
        f1, f2 = model(torch.cat([x, x])).chunk(2)
    torch.testing.assert_close(f1, f2)
    torch.manual_seed(0)
    g1, g2 = model(torch.cat([x, x])).chunk(2)  # unpaired: independent masks
    assert not torch.allclose(g1, g2)


def test_pace_noise_makes_copies_differ_and_gradients_flow():
    model = inject(tiny_vit(), "lora_mul_vpt_add", rank=2)
    regulariser = build_regulariser(model, "pace", sigma=1.0, lam=1.0)
    with torch.no_grad():
        for _, layer in branch_modules(model):
            layer.d_w.normal_(0, 0.1)
    model.train()
    parts = regulariser(model, torch.randn(4, 3, 32, 32), torch.arange(4), torch.arange(4), 0)
    assert parts.consistency.item() > 0 and math.isfinite(parts.loss.item())
    parts.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
