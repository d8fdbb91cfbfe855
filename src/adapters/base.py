"""The adapter-branch contract shared by every PEFT method, plus the registry and ``inject``.

An adapted layer computes ``h(x) = h0(x) + z * Δh(x)``: ``h0`` is the frozen pre-trained layer,
``Δh`` the adapter branch and ``z`` a multiplier that a regulariser (``src.pace``) may attach as
``branch_noise``. Keeping ``h0`` and ``Δh`` separate is what lets PACE perturb only the branch;
``merged_weight_and_bias`` folds ``Δh`` back into one matmul wherever no noise is active.
Nothing here knows about PACE or Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from src.errors import UserError, check_choice

# The linear layers of a timm ViT block that the paper adapts ("every linear layer of every block").
DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable adapter branch ``Δh``.

    Subclasses implement :meth:`branch` and :meth:`merged_delta`. ``branch_noise``, when set, is a
    module called on ``Δh`` that returns it perturbed and exposes ``is_active()``; while it is
    active the layer runs base and branch separately, otherwise it runs the merged weights.
    """

    def __init__(self, base: nn.Linear, rank: int | None = None):
        # ``rank`` is accepted so that cooperative subclasses can pass it along the MRO.
        super().__init__()
        base.requires_grad_(False)
        self.base = base
        self.branch_noise: nn.Module | None = None
        # Switched off to measure the distance to the pre-trained model (Δ = 0, same head).
        self.branch_enabled = True

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def base_bias(self) -> torch.Tensor:
        if self.base.bias is not None:
            return self.base.bias
        return self.base.weight.new_zeros(self.out_features)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """Δh(x); may return a tensor that broadcasts against ``h0(x)`` (e.g. a bias shift)."""
        raise NotImplementedError

    def merged_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ΔW, Δb) such that ``h0 + Δh`` equals ``F.linear(x, W0 + ΔW, b0 + Δb)``."""
        raise NotImplementedError

    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        delta_w, delta_b = self.merged_delta()
        return self.base.weight + delta_w, self.base_bias() + delta_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.branch_enabled:
            return self.base(x)
        noise = self.branch_noise
        if noise is not None and noise.is_active():
            h0 = self.base(x)
            return h0 + noise(self.branch(x).expand_as(h0))
        weight, bias = self.merged_weight_and_bias()
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}"


AdapterFactory = Callable[..., AdaptedLinear]
ADAPTERS: dict[str, AdapterFactory] = {}


def register_adapter(name: str) -> Callable[[AdapterFactory], AdapterFactory]:
    def decorator(factory: AdapterFactory) -> AdapterFactory:
        if name in ADAPTERS:
            raise ValueError(f"adapter '{name}' registered twice")
        ADAPTERS[name] = factory
        return factory

    return decorator


def adapted_layers(model: nn.Module) -> Iterator[tuple[str, AdaptedLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLinear):
            yield name, module


def _head_parameter_names(model: nn.Module) -> set[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def inject(
    model: nn.Module,
    name: str,
    rank: int = 10,
    targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS,
    train_head: bool = True,
) -> nn.Module:
    """Freeze ``model``, wrap every target linear in its blocks with adapter ``name``, in place.

    Only the adapter parameters and (by default) the classification head stay trainable.
    """
    check_choice("adapter", name, ADAPTERS)
    if rank < 1:
        raise UserError(f"adapter.rank must be a positive integer, got {rank}")
    factory = ADAPTERS[name]
    head_params = _head_parameter_names(model) if train_head else set()
    model.requires_grad_(False)

    matches = [
        (module_name, module)
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(module_name.endswith("." + t) for t in targets)
    ]
    if not matches:
        raise UserError(
            f"adapter '{name}' found none of the target layers {list(targets)} in "
            f"{type(model).__name__}; choose a timm ViT backbone or set adapter.targets"
        )
    for module_name, linear in matches:
        parent_name, _, attr = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, factory(linear, rank=rank))
    for param_name, param in model.named_parameters():
        if param_name in head_params:
            param.requires_grad_(True)
    return model


def set_branches_enabled(model: nn.Module, enabled: bool) -> None:
    for _, layer in adapted_layers(model):
        layer.branch_enabled = enabled


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable / total parameters, and the adapter share (trainable minus the head)."""
    head = _head_parameter_names(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    head_count = sum(
        p.numel() for n, p in model.named_parameters() if n in head and p.requires_grad
    )
    return {"trainable": trainable, "total": total, "adapter": trainable - head_count}
