"""What a run does at the terminal before it starts: the ``extras`` config group.

Kept free of torch and Lightning imports; see ``conf/extras/default.yaml`` for the switches.
"""

from __future__ import annotations

import sys
import warnings

from omegaconf import DictConfig, OmegaConf, open_dict

from src.cli.entry import is_rank_zero
from src.errors import UserError

# Warnings that say nothing actionable for this project's runs.
KNOWN_NOISE = (
    ".*does not have many workers.*",  # 0 workers is deliberate: images are decoded once, cached
    ".*Checkpoint directory .* exists and is not empty.*",  # resuming into the run's own folder
    ".*is an invalid version and will not be supported.*",
    ".*`torch.cuda.amp.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # inside Lightning, not our code
)

# Printed first, in this order; the rest follows alphabetically.
TREE_ORDER = ("data", "backbone", "adapter", "pace", "optim", "trainer", "logger", "callbacks")


def apply_extras(cfg: DictConfig) -> None:
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        for pattern in KNOWN_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
    if extras.get("enforce_tags"):
        enforce_tags(cfg)
    if extras.get("print_config") and is_rank_zero():
        print_config_tree(cfg)


def enforce_tags(cfg: DictConfig) -> None:
    if cfg.get("tags"):
        return
    if not sys.stdin.isatty():
        raise UserError("extras.enforce_tags is on but no tags were given; add tags=[name,...]")
    answer = input("tags for this run (comma-separated): ")
    tags = [t.strip() for t in answer.split(",") if t.strip()]
    if not tags:
        raise UserError("no tags given; add tags=[name,...] or set extras.enforce_tags=false")
    with open_dict(cfg):
        cfg.tags = tags


def print_config_tree(cfg: DictConfig, file=None) -> None:
    """The composed config as a rich tree, one branch per group (interpolations shown as typed
    when they cannot be resolved yet)."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + sorted(
        k for k in cfg if k not in TREE_ORDER and k != "hydra"
    )
    scalars = {}
    for key in keys:
        node = cfg[key]
        if not OmegaConf.is_config(node):
            scalars[key] = node
            continue
        branch = tree.add(f"[bold]{key}[/bold]")
        branch.add(Syntax(_to_yaml(node), "yaml", theme="ansi_dark", background_color="default"))
    if scalars:
        top = tree.add("[bold]top level[/bold]")
        top.add(Syntax(_to_yaml(OmegaConf.create(scalars)), "yaml", background_color="default"))
    Console(file=file or sys.stderr, soft_wrap=True).print(tree)


def _to_yaml(node) -> str:
    try:
        return OmegaConf.to_yaml(node, resolve=True).rstrip()
    except Exception:  # e.g. ${hydra:...} outside a Hydra run; show the config as written
        return OmegaConf.to_yaml(node).rstrip()
