"""Which ``trainer.precision`` the device of a run can honour, checked before the run starts.

Lightning would otherwise substitute silently: ``16-mixed`` on a CPU becomes ``bf16-mixed`` after
a warning, and ``bf16-mixed`` on a GPU without bfloat16 (before Ampere, compute capability 8.0)
makes torch's CUDA autocast disable itself after a warning, so the run trains in float32. Both
are refused here with one line that says what to pass instead (``trainer=gpu`` chooses
``bf16-mixed``; README, "Configuration").
"""

from __future__ import annotations

from collections.abc import Mapping

from src.errors import UserError

# Lightning's precision names that autocast to float16 / bfloat16 (the "true" half precisions
# cast the weights themselves and are not mixed precision).
FLOAT16_MIXED = ("16-mixed", "16")
BFLOAT16_MIXED = ("bf16-mixed", "bf16")


def precision_problem(
    precision: str, device: str, gpu_name: str = "", gpu_has_bf16: bool = True
) -> str | None:
    """What is wrong with ``precision`` on ``device`` ("cpu" or "cuda"), or None."""
    precision = str(precision)
    if device == "cpu" and precision in FLOAT16_MIXED:
        return (
            f"trainer.precision={precision} (float16 autocast with loss scaling) needs a GPU; "
            "on CPU pass trainer.precision=bf16-mixed (bfloat16 autocast) or 32-true"
        )
    if device == "cuda" and precision in BFLOAT16_MIXED and not gpu_has_bf16:
        return (
            f"trainer.precision={precision}: this GPU ({gpu_name}) has no bfloat16 arithmetic "
            "(it needs compute capability 8.0, Ampere or newer); pass trainer.precision=16-mixed "
            "(float16 with loss scaling) or 32-true"
        )
    return None


def run_device(accelerator: str) -> str:
    """The device type a Trainer with ``accelerator`` trains on: "cuda", "cpu" or another."""
    import torch

    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(accelerator)


def check_precision(trainer: Mapping) -> None:
    """Raise a one-line UserError when ``trainer.precision`` does not fit its device."""
    import torch

    precision = str(trainer.get("precision", "32-true"))
    device = run_device(str(trainer.get("accelerator", "auto")))
    gpu_name, has_bf16 = "", True
    if device == "cuda" and torch.cuda.is_available():  # else Lightning says there is no GPU
        gpu_name = torch.cuda.get_device_name()
        has_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    problem = precision_problem(precision, device, gpu_name, has_bf16)
    if problem:
        raise UserError(problem)


# The precisions `python -m src.bench --precision` runs, as Lightning's training step does.
BENCH_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def autocast(precision: str, device_type: str):
    """The autocast context Lightning's ``bf16-mixed`` / ``16-mixed`` run a training step in
    (disabled for ``32-true``)."""
    import torch

    dtype = torch.float16 if precision in FLOAT16_MIXED else torch.bfloat16
    enabled = precision in FLOAT16_MIXED + BFLOAT16_MIXED
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)
