"""PEFT adapters: every method's config schema at once, the torch side on first use.

Importing the package registers every method's config with Hydra (``adapter_schema/<name>``,
from the torch-free ``src.adapters.schemas``), which ``conf/adapter/<name>.yaml`` builds on, so
entry points import it before Hydra composes without paying for torch. The first access to
anything else here (``inject``, ``ADAPTERS``, …) imports the family files, which register every
method in ``ADAPTERS``.

One file per family: ``glora`` (GLoRA and the paper's GLoRA paths), ``lora``, ``vera``,
``bottleneck`` (adapter, AdaptFormer, RepAdapter), ``vpt``, ``scale_shift`` (SSF, BitFit),
``full`` (full fine-tuning, linear probing), ``sparse`` (GPS, GRFT).
"""

from __future__ import annotations

import importlib

from src.adapters.schemas import BLOCK_LINEARS, SCHEMAS, AdapterConfig
from src.lazy import lazy_exports

# Public name -> the module that defines it (loaded, with every family, on first access).
_LAZY = {
    "ADAPTERS": "base",
    "AdaptedLinear": "base",
    "BranchModule": "base",
    "branch_modules": "base",
    "count_parameters": "base",
    "declared_trainable": "base",
    "inject": "base",
    "load_methods": "base",
    "make_config": "base",
    "register_adapter": "base",
    "set_branches_enabled": "base",
    "use_fused_paths": "base",
    "calibrate": "calibration",
    "calibrate_adapters": "calibration",
    "restore_selection": "calibration",
    "iter_blocks": "sites",
}


def _load_methods() -> None:
    importlib.import_module("src.adapters.base").load_methods()


__getattr__ = lazy_exports(__name__, _LAZY, before=_load_methods)


__all__ = ["BLOCK_LINEARS", "SCHEMAS", "AdapterConfig", *_LAZY]
