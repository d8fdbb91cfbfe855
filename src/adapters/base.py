"""The adapter-branch contract shared by every PEFT method, plus the registry and ``inject``.

A branch module at a site computes ``h(x) = h0(x) + z ⊙ Δh(x)``: ``h0`` is the frozen pre-trained
sub-module, ``Δh`` the method's branch and ``z`` a multiplier that a regulariser (``src.pace``) may
attach as ``branch_noise``. Keeping ``h0`` and ``Δh`` separate is what gives PACE's noise a precise
meaning for every method; where a method is mergeable, ``merged_delta`` folds ``Δh`` into the base
module's own parameters, and the merged weights are used whenever no noise is active.

A method is a :class:`BranchModule` subclass registered together with its typed config::

    @register_adapter("lora", config=LoRAConfig)
    class LoRA(AdaptedLinear): ...

Its trainable parameters are declared by construction: the parameters a branch module owns
(everything outside ``base``), the increments of :class:`ParameterDelta` (for raw parameters such
as a position table), and the classification head — never a pre-trained tensor itself, so
switching every branch off always gives back the pre-trained backbone.
Nothing here knows about PACE or Lightning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from src.adapters.fused import compute_dtype, dense_noisy_linear
from src.adapters.schemas import (  # noqa: F401  (re-exported: the contract's config types)
    BLOCK_LINEARS,
    AdapterConfig,
    LinearSitesConfig,
    store_schema,
)
from src.errors import UserError, check_choice


class BranchModule(nn.Module):
    """A frozen ``base`` sub-module plus a branch ``Δh``; the unit PACE perturbs.

    Subclasses implement :meth:`branch` and, when mergeable, :meth:`merged_delta`. The class
    attributes declare the contract the tests check for every registered method.
    """

    # Branch parameters initialised so that the adapted model equals the pre-trained one.
    identity_at_init = True
    # The branch can be folded into ``base``'s own parameters (see merged_delta).
    mergeable = False

    def __init__(self, base: nn.Module):
        super().__init__()
        base.requires_grad_(False)
        self.base = base
        self.branch_noise: nn.Module | None = None
        # Switched off to measure the distance to the pre-trained model (Δh = 0, same head).
        self.branch_enabled = True
        # Use the merged parameters whenever no noise is active; False forces the two paths.
        self.merge = True
        # Noisy passes take the fused path (noisy_forward); False keeps the plain computation
        # h0 + noise(Δh), the oracle the fused paths are tested against.
        self.fused = True

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """Δh, given the site's input ``x`` and the frozen output ``h0``; may broadcast to h0."""
        raise NotImplementedError

    def merged_delta(self) -> dict[str, torch.Tensor]:
        """{name of a ``base`` parameter: its increment} such that base with them equals h0 + Δh."""
        raise NotImplementedError

    def branch_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The parameters this method trains: everything the module owns outside ``base``."""
        for name, param in self.named_parameters():
            if not name.startswith("base."):
                yield name, param

    def merged_forward(self, x: torch.Tensor, delta: dict[str, torch.Tensor]) -> torch.Tensor:
        params = {n: getattr(self.base, n) + d for n, d in delta.items()}
        return functional_call(self.base, params, (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.branch_enabled:
            return self.base(x)
        noise = self.branch_noise
        noisy = noise is not None and noise.is_active()
        if self.mergeable and self.merge and not noisy:
            return self.merged_forward(x, self.merged_delta())
        if noisy and self.fused:
            return self.noisy_forward(x, noise)
        h0 = self.base(x)
        delta_h = self.branch(x, h0).expand_as(h0)
        return h0 + (noise(delta_h) if noisy else delta_h)

    def noisy_forward(self, x: torch.Tensor, noise: nn.Module) -> torch.Tensor:
        """``h0 + z ⊙ Δh`` with ``z = noise.draw(shape, Δh's dtype, device)``, in one fused
        multiply-add: no broadcast copy of Δh and no separate ``z ⊙ Δh`` temporary."""
        h0 = self.base(x)
        delta_h = self.branch(x, h0)
        # The noise takes Δh's dtype, as in the plain path: under autocast Δh may differ from h0
        # (SSF's (γ − 1) ⊙ h0 + β is float32 beside a bf16 linear output).
        z = noise.draw(h0.shape, delta_h.dtype, h0.device)
        return torch.addcmul(h0, delta_h, z)

    @classmethod
    def sites(cls, model: nn.Module, config: AdapterConfig) -> list[tuple[str, nn.Module]]:
        """(qualified name, module) pairs this method wraps; see ``src.adapters.sites``."""
        raise NotImplementedError

    @classmethod
    def install(cls, model: nn.Module, config: AdapterConfig) -> None:
        """Wrap every site of ``model`` in place. Methods with shared state override this."""
        from src.adapters.sites import replace_module

        for name, module in cls.sites(model, config):
            replace_module(model, name, cls(module, config))

    @classmethod
    def calibrate(cls, model: nn.Module, train_loader, config: AdapterConfig) -> None:
        """Data-dependent methods choose their structure here, once, before training."""

    @classmethod
    def needs_calibration(cls, model: nn.Module) -> bool:
        return False


class ParameterDelta(nn.Module):
    """``p = p0 + Δ`` for a raw parameter (position table, class token, a convolution's bias).

    Installed with ``torch.nn.utils.parametrize``, so the owning module reads ``p0 + Δ`` as its
    parameter. Used where a method trains a parameter that is not an output of a channel-last site;
    it carries no noise but honours ``branch_enabled`` like every branch.
    """

    def __init__(self, like: torch.Tensor):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros_like(like))
        self.branch_enabled = True

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original + self.delta if self.branch_enabled else original

    @staticmethod
    def install(module: nn.Module, name: str) -> None:
        original = getattr(module, name)
        parametrize.register_parametrization(module, name, ParameterDelta(original), unsafe=True)


class AdaptedLinear(BranchModule):
    """A frozen ``nn.Linear`` plus a branch; merged as ``F.linear(x, W0 + ΔW, b0 + Δb)``."""

    mergeable = True

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

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ΔW, Δb) such that ``h0 + Δh`` equals ``F.linear(x, W0 + ΔW, b0 + Δb)``."""
        raise NotImplementedError

    def merged_delta(self) -> dict[str, torch.Tensor]:
        delta_w, delta_b = self.delta_weight_and_bias()
        return {"weight": delta_w, "bias": delta_b}

    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        delta_w, delta_b = self.delta_weight_and_bias()
        return self.base.weight + delta_w, self.base_bias() + delta_b

    def merged_forward(self, x: torch.Tensor, delta: dict[str, torch.Tensor]) -> torch.Tensor:
        # base.bias may be None (Swin's PatchMerging), so the bias is added here, not swapped in.
        return F.linear(x, self.base.weight + delta["weight"], self.base_bias() + delta["bias"])

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.delta_weight_and_bias())

    def dense_delta(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ΔW, Δb) when Δh is the dense ``x·ΔWᵀ + Δb`` — the noisy pass then adds it into
        h0's buffer in one autograd function (``src/adapters/fused.py``); None for a method
        with its own cheaper branch (low-rank factors, a bias shift)."""
        if type(self).branch is not AdaptedLinear.branch:
            return None
        return self.delta_weight_and_bias()

    def noisy_forward(self, x: torch.Tensor, noise: nn.Module) -> torch.Tensor:
        dense = self.dense_delta()
        if dense is None:
            return super().noisy_forward(x, noise)
        dtype = compute_dtype(x)  # the branch's dtype: autocast's under mixed precision
        z = noise.draw(x.shape[:-1] + (self.out_features,), dtype, x.device)
        if z.dtype != dtype:  # float32 noise on a low-precision branch promotes the output
            h0 = self.base(x)
            return torch.addcmul(h0, F.linear(x, *dense), z)
        return dense_noisy_linear(x, self.base.weight, self.base_bias(), *dense, z)

    @classmethod
    def sites(cls, model: nn.Module, config: LinearSitesConfig) -> list[tuple[str, nn.Module]]:
        from src.adapters.sites import block_linears

        return block_linears(model, config)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}"


@dataclass(frozen=True)
class Method:
    """A registry entry: the typed config and the branch class that implements the method."""

    name: str
    config: type[AdapterConfig]
    impl: type[BranchModule]


ADAPTERS: dict[str, Method] = {}
# The modules of src/adapters/ that define methods (one per family of methods), each registering
# its methods when imported.
METHOD_MODULES = ("bottleneck", "full", "glora", "lora", "scale_shift", "sparse", "vera", "vpt")


def register_adapter(name: str, config: type[AdapterConfig]):
    """Register a BranchModule subclass as method ``name`` with its config dataclass."""

    def decorator(impl: type[BranchModule]) -> type[BranchModule]:
        if name in ADAPTERS:
            raise ValueError(f"adapter '{name}' registered twice")
        ADAPTERS[name] = Method(name, config, impl)
        # The project's methods are stored already (src/adapters/schemas.py, torch-free); this
        # makes a method defined elsewhere composable too once its module is imported.
        store_schema(name, config)
        return impl

    return decorator


def load_methods() -> None:
    """Import every method module, so that ``ADAPTERS`` holds every method of the project."""
    import importlib

    for module in METHOD_MODULES:
        importlib.import_module(f"src.adapters.{module}")


def make_config(adapter: str | Mapping | AdapterConfig, **overrides) -> AdapterConfig:
    """The method's typed config from a name, a (Hydra) mapping or a config, plus overrides."""
    if isinstance(adapter, AdapterConfig):
        fields = dataclasses.asdict(adapter)
    elif isinstance(adapter, str):
        fields = {"name": adapter}
    else:
        raw = (
            OmegaConf.to_container(adapter, resolve=True)
            if isinstance(adapter, DictConfig)
            else adapter
        )
        fields = dict(raw)
    fields.update(overrides)
    name = fields.get("name")
    load_methods()
    check_choice("adapter", str(name), ADAPTERS)
    cls = ADAPTERS[name].config
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise UserError(
            f"adapter '{name}' has no field {', '.join(unknown)}; "
            f"its fields are: {', '.join(known)}"
        )
    config = cls(**fields)
    config.validate()
    return config


def branch_modules(model: nn.Module) -> Iterator[tuple[str, BranchModule]]:
    for name, module in model.named_modules():
        if isinstance(module, BranchModule):
            yield name, module


def head_parameter_names(model: nn.Module) -> set[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return set()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def declared_trainable(model: nn.Module) -> set[str]:
    """Parameter names the injected method declares trainable (see the module docstring)."""
    config = model.adapter_config
    names = {
        f"{module_name}.{param_name}"
        for module_name, module in branch_modules(model)
        for param_name, _ in module.branch_parameters()
    }
    names |= {
        f"{module_name}.delta"
        for module_name, module in model.named_modules()
        if isinstance(module, ParameterDelta)
    }
    if config.train_head:
        names |= head_parameter_names(model)
    return names


def inject(model: nn.Module, adapter: str | Mapping | AdapterConfig, **overrides) -> nn.Module:
    """Freeze ``model`` and install adapter method ``adapter`` in place.

    ``adapter`` is a method name (``inject(model, "lora", rank=4)``), its config dataclass, or a
    mapping such as the ``adapter`` config group. Exactly the declared parameters stay trainable.
    """
    from src.adapters.sites import check_method_fits

    config = make_config(adapter, **overrides)
    check_method_fits(model, config.name)
    model.requires_grad_(False)
    ADAPTERS[config.name].impl.install(model, config)
    model.adapter_config = config
    set_trainable(model)
    return model


def set_trainable(model: nn.Module) -> None:
    """requires_grad exactly on the declared parameters (again after a calibration step)."""
    trainable = declared_trainable(model)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)


def use_fused_paths(model: nn.Module, enabled: bool = True) -> None:
    """Fused noisy passes (the default) or the plain ``h0 + noise(Δh)`` they are tested against."""
    for _, module in branch_modules(model):
        module.fused = enabled


def set_branches_enabled(model: nn.Module, enabled: bool) -> None:
    for module in model.modules():
        if isinstance(module, BranchModule | ParameterDelta):
            module.branch_enabled = enabled


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable / total parameters, and the adapter share (trainable minus the head)."""
    head = head_parameter_names(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    head_count = sum(
        p.numel() for n, p in model.named_parameters() if n in head and p.requires_grad
    )
    return {"trainable": trainable, "total": total, "adapter": trainable - head_count}
