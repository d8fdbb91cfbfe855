"""PACE: parameter-efficient fine-tuning with consistency regularisation, on Lightning + Hydra.

Importing the package loads nothing: ``python -m src.train`` installs its signal handlers before
any other import. To compose the project's configs from a notebook or a script::

    import src
    cfg = src.compose("experiment=vtab_pace", "data.task=cifar")

or, to call ``hydra.compose`` yourself, ``src.register_configs()`` first: the configs build on
the adapters' schemas and resolvers that the entry points register when they start.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout
CONF_DIR = PROJECT_ROOT / "conf"


def register_configs() -> None:
    """Register what ``conf/`` needs before Hydra composes: the adapter schemas and the
    project's OmegaConf resolvers (no torch)."""
    import src.adapters.schemas  # noqa: F401
    import src.cli.validation  # noqa: F401


def compose(*overrides: str, config_name: str = "train"):
    """The config ``python -m src.<config_name> <overrides>`` would run with (unresolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))
