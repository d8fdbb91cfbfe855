"""The one data-dependent step before fit, for methods that choose their structure from data.

``calibrate_adapters`` runs the method's pass over the training data (GPS, GRFT) — or, when a
run resumes from a checkpoint, reads the choice stored in it instead of repeating the pass — and
then marks exactly the declared parameters trainable. Methods without such a step skip it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from src.adapters.base import ADAPTERS, branch_modules, set_trainable

log = logging.getLogger(__name__)


def restore_selection(model: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> int:
    """Re-create the chosen structure from saved selection buffers; returns how many layers."""
    restored = 0
    for name, module in branch_modules(model):
        keys = getattr(module, "SELECTION", ())
        if keys and all(f"{prefix}{name}.{k}" in state for k in keys):
            module.restore_selection(state, f"{prefix}{name}.")
            restored += 1
    if restored:
        set_trainable(model)
    return restored


def calibrate(model: nn.Module, train_loader) -> None:
    """Run the injected method's data pass over ``train_loader`` (batches ``(x, y, ...)``)."""
    config = model.adapter_config
    impl = ADAPTERS[config.name].impl
    if impl.needs_calibration(model):
        impl.calibrate(model, train_loader, config)
        set_trainable(model)


def calibrate_adapters(model: nn.Module, datamodule, ckpt_path: str | None = None) -> None:
    """``calibrate`` on the datamodule's training loader, or restore the choice from ckpt_path."""
    config = model.adapter_config
    if not ADAPTERS[config.name].impl.needs_calibration(model):
        return
    if ckpt_path is not None:
        # Our own Lightning checkpoint (Lightning itself unpickles it fully when resuming).
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
        restored = restore_selection(model, state, prefix="model.")
        log.info(
            "adapter '%s': selection of %d layers restored from %s",
            config.name,
            restored,
            ckpt_path,
        )
        return
    datamodule.setup("fit")
    calibrate(model, datamodule.train_dataloader())
