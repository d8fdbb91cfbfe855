"""Config plumbing that must exist before Hydra composes anything, kept free of heavy imports.

Importing this module registers the project's OmegaConf resolvers. Entry points import it at
the top so that ``--help`` and config errors never wait for torch, Lightning or timm.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

# `${cwd:}` is the launch folder. Hydra's own `${hydra:runtime.cwd}` is not set yet while Hydra
# builds `hydra.sweep.dir`, so a path group that uses it breaks every `-m` run.
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


def filesystem_safe(text: str, max_length: int = 120) -> str:
    """``text`` as one folder name: no path separators, and short enough for any filesystem
    (a multirun job folder is named by its overrides, which may hold paths)."""
    safe = "".join("_" if c in '/\\:*?"<>| ' else c for c in str(text)).strip("._")
    return safe[:max_length] or "job"


OmegaConf.register_new_resolver("fs_safe", filesystem_safe, replace=True)


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


# `${mkdir:<folder>}` is the folder, created if missing: SQLite (the Optuna study in
# conf/hparams_search/pace_optuna.yaml) opens a database file only in an existing folder.
OmegaConf.register_new_resolver("mkdir", _mkdir, replace=True)
