"""PEFT adapters. Importing this package registers every method in ``ADAPTERS`` — and its config
schema with Hydra (``adapter_schema/<name>``), which ``conf/adapter/<name>.yaml`` builds on, so
entry points import it before Hydra composes.

One file per family: ``glora`` (GLoRA and the paper's GLoRA paths), ``lora``, ``vera``,
``bottleneck`` (adapter, AdaptFormer, RepAdapter), ``vpt``, ``scale_shift`` (SSF, BitFit),
``full`` (full fine-tuning, linear probing), ``sparse`` (GPS, GRFT).
"""

from src.adapters import bottleneck, full, glora, lora, scale_shift, sparse, vera, vpt  # noqa: F401
from src.adapters.base import (
    ADAPTERS,
    BLOCK_LINEARS,
    AdaptedLinear,
    AdapterConfig,
    BranchModule,
    adapted_layers,
    branch_modules,
    count_parameters,
    declared_trainable,
    inject,
    make_config,
    register_adapter,
    set_branches_enabled,
)
from src.adapters.calibration import calibrate, calibrate_adapters, restore_selection
from src.adapters.sites import iter_blocks

__all__ = [
    "ADAPTERS",
    "BLOCK_LINEARS",
    "AdaptedLinear",
    "AdapterConfig",
    "BranchModule",
    "adapted_layers",
    "branch_modules",
    "calibrate",
    "calibrate_adapters",
    "count_parameters",
    "declared_trainable",
    "inject",
    "iter_blocks",
    "make_config",
    "register_adapter",
    "restore_selection",
    "set_branches_enabled",
]
