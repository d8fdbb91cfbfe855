"""Every adapter method's typed config, free of torch — what Hydra needs before it composes.

``conf/adapter/<name>.yaml`` starts from the node ``adapter_schema/<name>`` stored here, so
defaults live once (in the dataclass), Hydra knows every field and its type, and an unknown key
is refused. Entry points import this module (through ``src.adapters``, whose heavy parts load on
first use) so that ``--help`` and config mistakes never wait for torch. The implementation of a
method binds to its config with ``@register_adapter(name, config=...)`` in its family file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from src.errors import UserError, check_choice

# The linear layers of a timm ViT/Swin block ("every linear layer of every block" in the paper).
BLOCK_LINEARS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
# GLoRA's paths A..E and what each may be (D and E are at most vectors).
GLORA_PATHS = "abcde"
GLORA_PATH_KINDS = ("lora", "vector", "scalar", "none")
# Bottleneck activations by name: the torch.nn class each one builds.
ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU"}
# How GRFT shares its parameter budget between matrices.
BUDGET_SCOPES = ("global", "per_matrix")


@dataclass
class AdapterConfig:
    """Knobs every method has; each method's subclass adds its own, with defaults stated once."""

    name: str = ""
    blocks: list[int] | None = None  # adapt only these blocks (depth order); null = every block
    train_head: bool = True  # the new classification head trains fully (as in the paper)

    def validate(self) -> None:
        """Raise a UserError for a value the method cannot use."""

    def require_positive(self, *names: str) -> None:
        for key in names:
            value = getattr(self, key)
            if not isinstance(value, int | float) or value <= 0:
                raise UserError(f"adapter.{key} must be positive for '{self.name}', got {value}")


@dataclass
class LinearSitesConfig(AdapterConfig):
    """For methods that act on block linears: which ones (suffixes of their names in a block)."""

    targets: list[str] = field(default_factory=lambda: list(BLOCK_LINEARS))


@dataclass
class RankConfig(LinearSitesConfig):
    rank: int = 10

    def validate(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise UserError(f"adapter.rank must be a positive integer, got {self.rank}")


@dataclass
class GLoRAConfig(RankConfig):
    # The GLoRA paper searches these per layer; here one choice applies to every target linear.
    rank: int = 4
    a: str = "lora"
    b: str = "lora"
    c: str = "lora"
    d: str = "vector"
    e: str = "vector"

    def validate(self) -> None:
        super().validate()
        for path in GLORA_PATHS:
            kinds = GLORA_PATH_KINDS if path in "abc" else ("vector", "scalar", "none")
            if getattr(self, path) not in kinds:
                raise UserError(
                    f"adapter.{path} must be one of {', '.join(kinds)}, got {getattr(self, path)}"
                )


@dataclass
class LoRAConfig(LinearSitesConfig):
    rank: int = 8
    alpha: float | None = None
    targets: list[str] = field(default_factory=lambda: ["attn.qkv"])

    def validate(self) -> None:
        self.require_positive("rank")
        if self.alpha is not None:
            self.require_positive("alpha")


@dataclass
class VeRAConfig(LinearSitesConfig):
    rank: int = 256
    projection_seed: int = 0
    d_init: float = 0.1

    def validate(self) -> None:
        self.require_positive("rank")


@dataclass
class BottleneckConfig(AdapterConfig):
    dim: int = 8
    scale: float = 1.0
    act: str = "gelu"

    def validate(self) -> None:
        self.require_positive("dim")
        check_choice("adapter.act", self.act, ACTIVATIONS)


@dataclass
class AdaptFormerConfig(BottleneckConfig):
    scale: float = 0.1
    act: str = "relu"


@dataclass
class RepAdapterConfig(LinearSitesConfig):
    dim: int = 8
    groups: int = 2
    scale: float = 1.0
    targets: list[str] = field(default_factory=lambda: ["attn.qkv", "mlp.fc1"])

    def validate(self) -> None:
        self.require_positive("dim", "groups")
        if self.dim % self.groups:
            raise UserError(
                f"adapter.dim ({self.dim}) must be divisible by adapter.groups ({self.groups})"
            )


@dataclass
class VPTConfig(AdapterConfig):
    num_tokens: int = 50

    def validate(self) -> None:
        self.require_positive("num_tokens")


@dataclass
class SSFConfig(LinearSitesConfig):
    init_std: float = 0.02


@dataclass
class GRFTConfig(LinearSitesConfig):
    budget: float = 0.003  # fraction of the backbone's parameters (VTAB setting of the paper)
    budget_scope: str = "global"
    mu: float = 1e-4  # weight of μ‖Δ‖²

    def validate(self) -> None:
        self.require_positive("budget")
        check_choice("adapter.budget_scope", self.budget_scope, BUDGET_SCOPES)
        if self.mu < 0:
            raise UserError(f"adapter.mu must be >= 0 (a penalty weight), got {self.mu}")


@dataclass
class GPSConfig(LinearSitesConfig):
    top_k: int = 1  # weights per output neuron

    def validate(self) -> None:
        self.require_positive("top_k")


# Method name -> its config; the family files bind each name to its implementation.
SCHEMAS: dict[str, type[AdapterConfig]] = {
    "glora": GLoRAConfig,
    "lora_mul_vpt_add": RankConfig,
    "lora_add": RankConfig,
    "vpt_add": RankConfig,
    "lora": LoRAConfig,
    "vera": VeRAConfig,
    "adapter": BottleneckConfig,
    "adaptformer": AdaptFormerConfig,
    "repadapter": RepAdapterConfig,
    "vpt_deep": VPTConfig,
    "vpt_shallow": VPTConfig,
    "ssf": SSFConfig,
    "bitfit": AdapterConfig,
    "full": AdapterConfig,
    "linear": AdapterConfig,
    "gps": GPSConfig,
    "grft": GRFTConfig,
}


def store_schema(name: str, config: type[AdapterConfig]) -> None:
    """Make ``adapter_schema/<name>`` (the config's defaults) available to Hydra."""
    ConfigStore.instance().store(group="adapter_schema", name=name, node=config(name=name))


for _name, _config in SCHEMAS.items():
    store_schema(_name, _config)
