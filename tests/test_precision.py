"""Mixed precision: every adapter × PACE mode trains under bf16 autocast (what Lightning's
``trainer.precision=bf16-mixed`` runs on CPU), and its loss and gradients agree with float32.

Tolerance. bf16 keeps 8 significant bits (unit roundoff u = 2⁻⁸ ≈ 0.4 %). Under autocast every
linear, attention matmul and GELU of the tiny ViT runs in bf16, so the loss and the gradients
carry the rounding of a few dozen such operations in sequence (σ = 1 and perturbed adapters make
the tiny model far less smooth than a real one). Measured on this matrix (worst over 68 cases,
two steps each): loss 1.8 %, the whole gradient (every trainable tensor in one vector) 4.4 %
(`full`), one tensor 9.7 % (`vpt_add`'s 2-element ``u_p``, a sum over every token and channel
with cancellation), the consistency term 2.1 % of the larger of it and the CE. The bounds —
``LOSS_RTOL`` 4 %, ``GRAD_RTOL`` 8 % for the whole gradient, ``TENSOR_RTOL`` 20 % per tensor —
are about 10, 20 and 50 u: room for another BLAS's summation order, and still far below what a
wrong computation gives (a gradient that misses the noise, a branch or a cast is off by 30-100 %).
Each loss term must also be float32, and every gradient float32 (what the optimiser of float32
weights sees).
"""

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from src.adapters import ADAPTERS, branch_modules, use_fused_paths
from src.adapters.sparse import set_loss_scale
from src.pace import MODES, build_regulariser
from src.pace.consistency import FastPACE
from src.run.precision import precision_problem
from tests import processes
from tests.test_adapters import SMALL, adapted, perturb_trainable, x_batch
from tests.test_fast_paths import output_and_grads

METHODS = [(name, SMALL.get(name, {})) for name in sorted(ADAPTERS)]
LOSS_RTOL = 0.04
GRAD_RTOL = 0.08
TENSOR_RTOL = 0.2
# A gradient that is zero in exact arithmetic comes out as rounding noise; relative errors are
# measured against at least this norm (cf. tests/test_fast_paths.py).
FLOOR = 1e-3
ROOT = Path(__file__).resolve().parents[1]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.norm().clamp_min(FLOOR)).item()


def two_steps(model, regulariser, bf16: bool) -> list[dict]:
    """Loss parts and gradients of two steps without an update: fast's second step compares with
    the first's logits, lazy's step 0 is PACE on half the batch and step 1 a single pass."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    x, y, index = x_batch(4), torch.arange(4), torch.arange(4)
    steps = []
    for step in range(2):
        torch.manual_seed(11 + step)  # the same noise draws in both precisions
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            parts = regulariser(model, x, y, index, step)
        grads = torch.autograd.grad(parts.loss, list(params.values()), allow_unused=True)
        steps.append({"parts": parts, "grads": dict(zip(params, grads, strict=True))})
    return steps


# Which modes have a consistency term at steps 0 and 1 of two_steps (lazy: PACE at step 0 only;
# fast: a history to compare with from step 1 on).
HAS_CONSISTENCY_AT = ({"pace", "lazy"}, {"pace", "fast"})


def check_gradients(grads: dict, expected: dict, what: str) -> None:
    assert grads.keys() == expected.keys()
    present = [n for n, g in grads.items() if g is not None]
    assert present == [n for n, g in expected.items() if g is not None], what
    for name in present:
        assert grads[name].dtype == torch.float32, name  # what the float32 weights' optimiser sees
        error = relative_error(grads[name], expected[name])
        assert error <= TENSOR_RTOL, f"{what} {name}: relative error {error:.3f}"
    error = relative_error(
        torch.cat([grads[n].flatten() for n in present]),
        torch.cat([expected[n].flatten() for n in present]),
    )
    assert error <= GRAD_RTOL, f"{what} whole gradient: relative error {error:.3f}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row", METHODS, ids=[n for n, _ in METHODS])
def test_every_method_and_mode_trains_in_bf16_like_in_float32(row, mode):
    model = adapted(row).train()
    perturb_trainable(model)
    regulariser = build_regulariser(model, mode, sigma=1.0, lam=1.0, interval=2)
    regulariser.prepare(4, 5)
    reference = two_steps(copy.deepcopy(model), copy.deepcopy(regulariser), bf16=False)
    mixed = two_steps(model, regulariser, bf16=True)
    for step, (ref, low) in enumerate(zip(reference, mixed, strict=True)):
        parts, ref_parts = low["parts"], ref["parts"]
        # The loss terms are float32 whatever the logits' dtype (bf16 from the head here).
        assert parts.loss.dtype == parts.ce.dtype == parts.consistency.dtype == torch.float32
        assert torch.isfinite(parts.loss)
        assert relative_error(parts.ce, ref_parts.ce) <= LOSS_RTOL, f"step {step} CE"
        assert relative_error(parts.loss, ref_parts.loss) <= LOSS_RTOL, f"step {step} loss"
        consistency_error = (parts.consistency - ref_parts.consistency).abs()
        scale = torch.maximum(ref_parts.consistency, ref_parts.ce)
        assert consistency_error <= LOSS_RTOL * scale, f"step {step} consistency"
        if mode in HAS_CONSISTENCY_AT[step]:
            assert ref_parts.consistency > 0  # the step had a term to compare
        check_gradients(low["grads"], ref["grads"], f"step {step}")
    if mode == "fast":  # the history keeps its float32, filled from bf16 logits
        assert regulariser.history.dtype == torch.float32
        assert torch.equal(regulariser.history, mixed[1]["parts"].logits.detach().float())


@pytest.mark.parametrize("row", METHODS, ids=[n for n, _ in METHODS])
def test_fused_noisy_pass_equals_the_plain_one_under_autocast(row):
    """The fused layers compute what autocast makes of the plain ``h0 + z ⊙ Δh``: the same
    operations in bf16, so they agree to a few bf16 roundings (not 1e-5 as in float32)."""
    model = adapted(row).train()
    perturb_trainable(model)
    build_regulariser(model, "pace", sigma=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = output_and_grads(model, fused=True)
        plain_out, plain_grads = output_and_grads(model, fused=False)
    assert out.dtype == plain_out.dtype
    assert relative_error(out, plain_out) <= LOSS_RTOL
    input_grad, plain_input_grad = grads.pop("input"), plain_grads.pop("input")
    assert relative_error(input_grad, plain_input_grad) <= GRAD_RTOL
    check_gradients(grads, plain_grads, "fused vs plain")


def noisy_output_dtypes(name: str, noise_dtype: str) -> set[torch.dtype]:
    model = adapted((name, {"rank": 2})).train()
    build_regulariser(model, "pace", sigma=1.0, noise_dtype=noise_dtype)
    dtypes = set()
    for _, module in branch_modules(model):
        if module.branch_noise.sigma > 0:  # block 0 carries no noise under the ViT schedule
            module.register_forward_hook(lambda m, args, out: dtypes.add(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x_batch(2))
    return dtypes


@pytest.mark.parametrize("name", ["lora_mul_vpt_add", "lora_add"])
def test_noise_dtype_keeps_its_meaning_under_autocast(name):
    # recipe.noise_dtype (docs/recipe.md, row 8): `branch` — noise in the branch's dtype, which
    # under autocast is bf16, so the noisy linear stays bf16 like every other linear; `float32`
    # (the official code) — float32 noise promotes the noisy layer's output to float32.
    assert noisy_output_dtypes(name, "branch") == {torch.bfloat16}
    assert noisy_output_dtypes(name, "float32") == {torch.float32}


@pytest.mark.parametrize("mode", ["pace", "fast"])
def test_float32_noise_also_trains_in_bf16_like_in_float32(mode):
    model = adapted(("lora_mul_vpt_add", {"rank": 2})).train()
    perturb_trainable(model)
    regulariser = build_regulariser(model, mode, sigma=1.0, noise_dtype="float32")
    regulariser.prepare(4, 5)
    reference = two_steps(copy.deepcopy(model), copy.deepcopy(regulariser), bf16=False)
    mixed = two_steps(model, regulariser, bf16=True)
    for step, (ref, low) in enumerate(zip(reference, mixed, strict=True)):
        assert relative_error(low["parts"].loss, ref["parts"].loss) <= LOSS_RTOL
        check_gradients(low["grads"], ref["grads"], f"step {step}")


def test_consistency_of_bf16_logits_is_summed_in_float32():
    # 1000 classes: a bf16 sum of 1000 squares keeps 8 bits and would be off by ~1 %.
    gen = torch.Generator().manual_seed(0)
    history = torch.randn(2, 1000, generator=gen)
    logits = (history + 0.01 * torch.randn(2, 1000, generator=gen)).bfloat16()
    fast = FastPACE(lam=1.0, history_init="zeros")
    fast.prepare(2, 1000)
    fast.history.copy_(history)

    def model(x):
        return logits

    parts = fast(model, torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2), 0)
    exact = (logits.double() - history.double()).pow(2).sum(-1).sum() / 2
    assert parts.consistency.dtype == torch.float32
    assert parts.consistency.item() == pytest.approx(exact.item(), rel=1e-5)


def test_dense_noisy_layer_saves_bf16_tensors_under_autocast():
    # Autocast's dtype for every operand, cast once: what the fused function keeps for backward
    # (x, W0, ΔW, z) is bf16, like what the plain path's F.linear keeps under autocast.
    model = adapted(("lora_mul_vpt_add", {"rank": 2})).train()
    build_regulariser(model, "pace", sigma=1.0)
    use_fused_paths(model, True)
    layer = model.blocks[1].attn.qkv
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(2, 5, layer.in_features))
    assert type(out.grad_fn).__name__ == "DenseNoisyLinearBackward"
    assert [t.dtype for t in out.grad_fn.saved_tensors] == [torch.bfloat16] * 4


# ------------------------------------------------------------- the real CLI, bf16-mixed on CPU


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    data = tmp_path / "data"
    if not data.exists():
        made = processes.run(
            "src.data.synthetic", "--root", str(data), "--task", "synthetic",
            cwd=tmp_path, env=env, timeout=300,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr[-2000:]
    return processes.run(
        "src.train", "debug=tiny", "data.task=synthetic",
        "data.num_classes=4", f"data.root={data}", "trainer.max_epochs=1",
        "callbacks.progress_bar=null", f"hydra.run.dir={tmp_path / 'run'}", *overrides,
        cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip


def test_cli_trains_pace_in_bf16_mixed(tmp_path):
    # A few batches of each stage: bf16 on a CPU without bf16 instructions is emulated and slow.
    few = ("trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
           "trainer.limit_test_batches=2")  # fmt: skip
    result = run_train(tmp_path, "trainer.precision=bf16-mixed", "pace=pace", *few)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert "Using bfloat16 Automatic Mixed Precision" in (run / "train.log").read_text()
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert metrics["train/consistency_epoch"] > 0 and 0 <= metrics["test/acc"] <= 1


def test_cli_refuses_16_mixed_on_cpu_in_one_line(tmp_path):
    result = run_train(tmp_path, "trainer.precision=16-mixed", "trainer=cpu")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.precision=bf16-mixed" in errors[0], result.stderr


# ------------------------------------------------ trainer=gpu, and precisions a device lacks


def test_trainer_gpu_and_ddp_train_in_bf16_mixed(compose_cfg):
    gpu = compose_cfg("trainer=gpu").trainer
    assert (gpu.accelerator, gpu.devices, gpu.precision) == ("gpu", 1, "bf16-mixed")
    ddp = compose_cfg("trainer=ddp").trainer
    assert (ddp.accelerator, ddp.devices, ddp.strategy, ddp.precision) == (
        "gpu", 2, "ddp", "bf16-mixed",
    )  # fmt: skip
    assert compose_cfg().trainer.precision == "32-true"  # the default, CPU-friendly


@pytest.mark.parametrize(
    ("precision", "device", "has_bf16", "fragment"),
    [
        ("16-mixed", "cpu", True, "on CPU pass trainer.precision=bf16-mixed"),
        ("bf16-mixed", "cuda", False, "pass trainer.precision=16-mixed"),
        ("bf16-mixed", "cuda", True, None),
        ("16-mixed", "cuda", False, None),
        ("bf16-mixed", "cpu", True, None),
        ("32-true", "cpu", True, None),
    ],
)
def test_a_precision_the_device_lacks_is_named_with_its_fix(precision, device, has_bf16, fragment):
    problem = precision_problem(precision, device, "Tesla V100-SXM2-16GB", has_bf16)
    if fragment is None:
        assert problem is None
    else:
        assert fragment in problem and "\n" not in problem
        assert ("V100" in problem) == (device == "cuda")


def test_grft_penalty_gradient_keeps_its_size_under_loss_scaling():
    # 16-mixed backpropagates the loss times the GradScaler's scale S and divides the gradients
    # by S afterwards; GRFT's penalty 2μΔ, added during backward, must be added times S too.
    model = adapted(("grft", {"mu": 0.1})).train()
    perturb_trainable(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)

    def gradients(scale: float) -> list[torch.Tensor]:
        optimizer.zero_grad()
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        set_loss_scale(model, scaler.get_scale())
        loss = torch.nn.functional.cross_entropy(model(x_batch(4)), torch.arange(4))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        return [p.grad.clone() for p in params]

    for scaled, plain in zip(gradients(2.0**10), gradients(1.0), strict=True):
        torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=1e-7)
