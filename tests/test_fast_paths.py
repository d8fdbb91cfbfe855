"""The faster training paths compute exactly what the plain ones do (the plain paths are the
oracle): the fused noisy pass of every adapter, the dense-Δ noisy layer, and full PACE
with the noise-free prefix computed once."""

import copy

import pytest
import torch
import torch.nn.functional as F

from src.adapters import branch_modules, inject, use_fused_paths
from src.adapters.fused import DenseNoisyLinear
from src.pace import build_regulariser
from src.pace.consistency import PACE
from src.pace.twin import first_noisy_block
from tests.test_adapters import ROW_IDS, ROWS, adapted, perturb_trainable, tiny_vit, x_batch

RTOL = 1e-5
# A gradient that is zero in exact arithmetic (a GLoRA scalar whose contributions cancel) comes
# out as rounding noise on both paths; relative error is measured against at least this norm.
FLOOR = 1e-6


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    error = (actual - expected).norm() / expected.norm().clamp_min(FLOOR)
    assert error <= RTOL, f"{what}: relative error {error:.2e}"


def output_and_grads(model, fused: bool, seed: int = 5):
    """One noisy forward, and the gradients of a fixed projection of it for the input and every
    trainable parameter; the same random draws each call."""
    use_fused_paths(model, fused)
    torch.manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = x_batch(4).to(dtype).requires_grad_(True)
    out = model(x)
    projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * projection).sum(), [x] + [p for _, p in named])
    return out.detach(), dict(zip(["input"] + [n for n, _ in named], grads, strict=True))


@pytest.mark.parametrize("drop_path", [0.0, 0.5], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("noise_shape", ["channel", "token"])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_fused_noisy_pass_equals_the_plain_one(row, noise_shape, drop_path):
    # float64: some variants (a scalar added to every weight) amplify float32 rounding; the
    # float32 test below covers the paper's adapter and a low-rank one.
    check_fused_against_plain(row, noise_shape, drop_path, torch.float64)


@pytest.mark.parametrize("noise_shape", ["channel", "token"])
@pytest.mark.parametrize("name", ["lora_mul_vpt_add", "lora_add"])
def test_fused_noisy_pass_equals_the_plain_one_in_float32(name, noise_shape):
    check_fused_against_plain((name, {"rank": 2}), noise_shape, 0.5, torch.float32)


def check_fused_against_plain(row, noise_shape, drop_path, dtype):
    model = adapted(row, tiny_vit(drop_path_rate=drop_path)).train()
    perturb_trainable(model)
    model.to(dtype)
    build_regulariser(model, "pace", sigma=1.0, noise_shape=noise_shape)
    out, grads = output_and_grads(model, fused=True)
    plain_out, plain_grads = output_and_grads(model, fused=False)
    assert_relative_close(out, plain_out, "output")
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        if grad is None or plain_grads[name] is None:
            assert grad is None and plain_grads[name] is None, name
            continue
        assert_relative_close(grad, plain_grads[name], name)


def test_the_papers_adapter_takes_the_dense_noisy_path():
    model = inject(tiny_vit(), "lora_mul_vpt_add", rank=2)
    layers = [m for _, m in branch_modules(model)]
    assert len(layers) == 8 and all(m.dense_delta() is not None for m in layers)
    low_rank = inject(tiny_vit(), "lora_add", rank=2)
    assert all(m.dense_delta() is None for _, m in branch_modules(low_rank))


@pytest.mark.parametrize("z_shape", [(3, 1, 6), (3, 4, 6)], ids=["channel", "token"])
def test_dense_noisy_linear_gradients_are_exact(z_shape):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, grad=True):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(grad)

    x, w0, b0 = rand(3, 4, 5), rand(6, 5, grad=False), rand(6, grad=False)
    delta_w, delta_b, z = rand(6, 5), rand(6), rand(*z_shape, grad=False)
    out = DenseNoisyLinear.apply(x, w0, b0, delta_w, delta_b, z)
    expected = F.linear(x, w0, b0) + z * F.linear(x, delta_w, delta_b)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(DenseNoisyLinear.apply, (x, w0, b0, delta_w, delta_b, z))


def pace_loss_and_grads(model, x, y, share_prefix: bool):
    torch.manual_seed(11)
    parts = PACE(lam=1.0, share_prefix=share_prefix).pace_loss(model, x, y)
    params = [p for p in model.parameters() if p.requires_grad]
    return parts, torch.autograd.grad(parts.loss, params)


@pytest.mark.parametrize("drop_path", [0.0, 0.5], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("noise_shape", ["channel", "token"])
def test_shared_prefix_pace_equals_whole_batch_pace(noise_shape, drop_path):
    model = inject(tiny_vit(depth=3, drop_path_rate=drop_path), "lora_mul_vpt_add", rank=2)
    perturb_trainable(model)
    build_regulariser(model, "pace", sigma=1.0, noise_shape=noise_shape)
    model.train()
    x, y = x_batch(4), torch.arange(4)
    parts, grads = pace_loss_and_grads(model, x, y, share_prefix=True)
    plain, plain_grads = pace_loss_and_grads(model, x, y, share_prefix=False)
    assert_relative_close(parts.loss.detach(), plain.loss.detach(), "loss")
    assert_relative_close(parts.consistency.detach(), plain.consistency.detach(), "consistency")
    assert parts.consistency > 0
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        assert_relative_close(grad, plain_grad, "gradient")


def test_block_zero_runs_once_and_the_copies_split_at_block_one():
    model = inject(tiny_vit(depth=3), "lora_add", rank=2)
    build_regulariser(model, "pace", sigma=1.0)
    model.train()
    assert first_noisy_block(model) is model.blocks[1]
    batch_sizes = {}
    for k, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, args, out, k=k: batch_sizes.update({k: len(out)}))
    PACE(lam=1.0).pace_loss(model, x_batch(4), torch.arange(4))
    assert batch_sizes == {0: 4, 1: 8, 2: 8}


def test_nothing_is_shared_when_block_zero_is_noisy():
    model = inject(tiny_vit(depth=3), "lora_add", rank=2)
    hierarchical = copy.deepcopy(model)
    build_regulariser(model, "pace", sigma=0.0)
    build_regulariser(hierarchical, "pace", sigma=1.0, schedule="hierarchical")
    assert first_noisy_block(model.train()) is None  # σ = 0: no noise anywhere
    assert first_noisy_block(hierarchical.train()) is hierarchical.blocks[0]
    assert first_noisy_block(hierarchical.eval()) is None


def test_vpt_deep_splits_at_its_first_noisy_prompted_block():
    model = inject(tiny_vit(depth=3), "vpt_deep", num_tokens=2)
    build_regulariser(model, "pace", sigma=1.0)
    assert first_noisy_block(model.train()) is model.blocks[1]
