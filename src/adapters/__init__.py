"""PEFT adapters. Importing this package registers every method in ``ADAPTERS``."""

from src.adapters import glora  # noqa: F401  (registers the GLoRA-path adapters)
from src.adapters.base import (
    ADAPTERS,
    DEFAULT_TARGETS,
    AdaptedLinear,
    adapted_layers,
    count_parameters,
    inject,
    register_adapter,
    set_branches_enabled,
)

__all__ = [
    "ADAPTERS",
    "DEFAULT_TARGETS",
    "AdaptedLinear",
    "adapted_layers",
    "count_parameters",
    "inject",
    "register_adapter",
    "set_branches_enabled",
]
