"""Config plumbing that must exist before Hydra composes anything, kept free of heavy imports.

Importing this module registers the project's OmegaConf resolvers. Entry points import it at
the top so that ``--help`` and config errors never wait for torch, Lightning or timm.
"""

from __future__ import annotations

import difflib
import math
import os
import re

from omegaconf import DictConfig, OmegaConf

from src.errors import UserError
from src.run.folder import run_file_name
from src.run.keys import key_role

# `${cwd:}` is the launch folder. Hydra's own `${hydra:runtime.cwd}` is not set yet while Hydra
# builds `hydra.sweep.dir`, so a path group that uses it breaks every `-m` run.
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


def filesystem_safe(text: str, max_length: int = 120) -> str:
    """``text`` as one folder name: no path separators, and short enough for any filesystem
    (a multirun job folder is named by its overrides, which may hold paths)."""
    safe = "".join("_" if c in '/\\:*?"<>| ' else c for c in str(text)).strip("._")
    return safe[:max_length] or "job"


OmegaConf.register_new_resolver("fs_safe", filesystem_safe, replace=True)

_claimed: dict[str, str] = {}


def claim_folder(path: str) -> str:
    """``path``, or ``path_2``, ``path_3``… when another launch has it: launches started in the
    same second (folders are named by the time) never share a folder.

    The folder is claimed by creating it, which is atomic; the answer is remembered, so every
    later resolution in this process (Hydra resolves the run folder several times, and once
    more per job of a multirun) gives the same folder.
    """
    if path not in _claimed:
        candidate, number = path, 1
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        while True:
            try:
                os.mkdir(candidate)
                break
            except FileExistsError:
                number += 1
                candidate = f"{path}_{number}"
        _claimed[path] = candidate
    return _claimed[path]


OmegaConf.register_new_resolver("claim_folder", claim_folder, replace=True, use_cache=True)

# `${run_file:summary}` is summary.csv: the components a run builds from its config take the names
# of the files they write in the run folder from the run folder's one table (src/run/folder.py).
OmegaConf.register_new_resolver("run_file", run_file_name, replace=True)


def keys_a_job_folder_omits(overrides) -> list[str]:
    """The keys of a multirun job's overrides that its folder name leaves out (Hydra's
    ``override_dirname.exclude_keys``): those that decide neither the result nor the replicate
    (paths, workers, loggers, a search's own keys; :func:`src.run.keys.key_role`)."""
    keys = (str(override).split("=", 1)[0].lstrip("+~") for override in overrides)
    return [key for key in keys if not key_role(key).logged]


OmegaConf.register_new_resolver("keys_a_job_folder_omits", keys_a_job_folder_omits, replace=True)


# --------------------------------------------------------------------------------- validation
# One pass over the composed config before anything is built: every mistake found is named
# with its key, its value and what is allowed, all on one line. Rules only for keys whose bad
# values would otherwise train silently or fail late; the constructors check their own choices.


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_at_least(low: float, strict: bool = False):
    def rule(value) -> str | None:
        ok = _number(value) and math.isfinite(value) and (value > low if strict else value >= low)
        return None if ok else f"a finite number {'>' if strict else '>='} {low:g}"

    return rule


def integer_at_least(low: int, optional: bool = False):
    def rule(value) -> str | None:
        if optional and value is None:
            return None
        ok = _integer(value) and value >= low
        return None if ok else f"an integer >= {low}" + (" or null" if optional else "")

    return rule


def one_of(*choices):
    def rule(value) -> str | None:
        return None if value in choices else "one of " + ", ".join(map(str, choices))

    return rule


def boolean(value) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def optional_integer(value) -> str | None:
    return None if value is None or _integer(value) else "an integer or null"


def batch_limit(value) -> str | None:
    ok = (
        value is None
        or (_integer(value) and value >= 0)
        or (_number(value) and 0.0 <= value <= 1.0)
    )
    return None if ok else "null, a number of batches >= 0, or a fraction in [0, 1]"


def threads(value) -> str | None:
    return (
        None if value == "auto" or (_integer(value) and value >= 1) else "auto or an integer >= 1"
    )


def fraction_below_one(value) -> str | None:
    ok = _number(value) and 0.0 <= value < 1.0
    return None if ok else "a number in [0, 1)"


def optional_path(value) -> str | None:
    return None if value is None or isinstance(value, str) else "a path, 'last' or null"


TRAIN_RULES = {
    "sigma": finite_at_least(0),
    "lam": finite_at_least(0),
    "pace.sigma": finite_at_least(0),
    "pace.lam": finite_at_least(0),
    "seed": optional_integer,
    "cpu_threads": threads,
    "ckpt_path": optional_path,
    "overwrite": boolean,
    "train": boolean,
    "test": boolean,
    "optim.lr": finite_at_least(0, strict=True),
    "optim.weight_decay": finite_at_least(0),
    "optim.warmup_epochs": finite_at_least(0),
    "optim.warmup_lr": finite_at_least(0),
    "optim.min_lr": finite_at_least(0),
    "data.protocol": one_of("tune", "final"),
    "data.batch_size": integer_at_least(1),
    "data.num_workers": integer_at_least(0),
    "data.img_size": integer_at_least(1),
    "data.num_classes": integer_at_least(2, optional=True),
    "data.cache_limit_gb": lambda v: None if v is None else finite_at_least(0)(v),
    "backbone.drop_path": fraction_below_one,
    "trainer.max_epochs": integer_at_least(1),
    "trainer.log_every_n_steps": integer_at_least(1),
    "trainer.check_val_every_n_epoch": integer_at_least(1, optional=True),
    "trainer.limit_train_batches": batch_limit,
    "trainer.limit_val_batches": batch_limit,
    "trainer.limit_test_batches": batch_limit,
    "diagnostics.grad_norm_every": lambda v: (
        None if v == "epoch" or integer_at_least(0)(v) is None else "'epoch' or an integer >= 0"
    ),
}


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _user_key(cfg: DictConfig, key: str) -> str:
    """The key the user would type: ``pace.sigma`` is ``${sigma}``, so its mistakes are sigma's."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if OmegaConf.is_config(node) and OmegaConf.is_interpolation(node, leaf):
        target = node._get_node(leaf)._value()  # e.g. '${sigma}'
        if target.startswith("${") and target.endswith("}") and ":" not in target:
            return target[2:-1].lstrip(".")
    return key


def config_problems(cfg: DictConfig, rules: dict) -> list[str]:
    """``key=value must be …`` for each key whose value breaks its rule (keys absent: skipped)."""
    problems: dict[str, str] = {}
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if isinstance(value, str) and value == "<absent>":
            continue
        allowed = rule(value)
        if allowed is not None:
            problems.setdefault(
                _user_key(cfg, key), f"{_user_key(cfg, key)}={_shown(value)} must be {allowed}"
            )
    return list(problems.values())


def patch_size(backbone_name: str, kwargs) -> int | None:
    """The ViT patch size a timm name or ``backbone.kwargs.patch_size`` gives (None: unknown)."""
    if kwargs and _integer(kwargs.get("patch_size")):
        return kwargs["patch_size"]
    match = re.search(r"patch(\d+)", backbone_name or "")
    return int(match.group(1)) if match else None


def validate_train_config(cfg: DictConfig) -> None:
    """Raise one UserError naming every invalid value of a composed ``train`` config."""
    problems = config_problems(cfg, TRAIN_RULES)
    size = OmegaConf.select(cfg, "backbone.img_size")
    patch = patch_size(
        OmegaConf.select(cfg, "backbone.name"), OmegaConf.select(cfg, "backbone.kwargs")
    )
    if _integer(size) and size > 0 and patch and size % patch:
        key = _user_key(cfg, "backbone.img_size")
        problems.append(
            f"{key}={size} must be a multiple of the backbone's patch size {patch} "
            f"(e.g. {max(patch, size - size % patch)})"
        )
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))


# ------------------------------------------------------------------ keys given but never read
# Sub-trees passed whole to a function as keyword arguments: a key added there reaches it (and a
# wrong one fails there). Nodes with a ``_target_`` are passed whole to their target too.
READ_WHOLE = (
    "optim",
    "pace",
    "diagnostics",
    "trainer",
    "callbacks",
    "logger",
    "hydra",
    "backbone.kwargs",
)

# `${a.b}` or `${oc.select:a.b,default}`: the keys an interpolation reads.
_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
_KEY = re.compile(r"[A-Za-z_][\w]*(?:\.[\w]+)*")


def closest_key(key: str, candidates) -> str | None:
    matches = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if not matches:  # a typo in the last part of a long dotted key
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
        near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        matches = [by_leaf[near[0]]] if near else []
    return matches[0] if matches else None


def dotted_keys(cfg: DictConfig) -> list[str]:
    """Every key of ``cfg`` with its parents ('a', 'a.b', 'a.b.c'), interpolations unresolved."""
    keys: list[str] = []

    def walk(node, prefix: str) -> None:
        for key in node:
            full = f"{prefix}{key}"
            keys.append(full)
            child = node._get_node(key)
            if OmegaConf.is_dict(child):
                walk(child, full + ".")

    walk(cfg, "")
    return keys


def interpolated_keys(*configs: DictConfig | None) -> set[str]:
    """The keys that interpolations anywhere in ``configs`` read (unresolved: nothing runs), e.g.
    ``slurm.partition`` from hydra/launcher=slurm's ``${oc.select:slurm.partition,null}``."""
    found: set[str] = set()

    def walk(node) -> None:
        for key in node if OmegaConf.is_dict(node) else range(len(node)):
            child = node._get_node(key)
            if OmegaConf.is_config(child) and not (child._is_none() or child._is_missing()):
                if not child._is_interpolation():
                    walk(child)
                    continue
            raw = child._value()
            if isinstance(raw, str) and "${" in raw:
                found.update(filter(None, map(_read_key, _INTERPOLATION.findall(raw))))

    for cfg in configs:
        if cfg is not None:
            walk(cfg)
    return found


def _read_key(body: str) -> str | None:
    """The key one innermost interpolation reads: ``a.b``, ``oc.select:a.b,default`` or
    ``hydra:job.num``; other resolvers (``now:%H``, ``cwd:``) read no key."""
    resolver, colon, argument = body.partition(":")
    if not colon:
        key = body.strip().lstrip(".")
    elif resolver == "oc.select":
        key = argument.split(",", 1)[0].strip()
    elif resolver == "hydra":
        key = f"hydra.{argument.strip()}"
    else:
        return None
    return key if _KEY.fullmatch(key) else None


def _has_target_above(cfg: DictConfig, key: str) -> bool:
    """A node above ``key`` has a ``_target_``: instantiate() passes it all its keys."""
    parts = key.split(".")
    for depth in range(1, len(parts)):
        node = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None)
        if OmegaConf.is_dict(node) and "_target_" in node:
            return True
    return False


def _refused_by_target(cfg: DictConfig, key: str) -> bool:
    """``key`` sits directly in a ``_target_`` node whose constructor takes no such keyword
    (``+trainer.max_epochs2=1``): instantiate() would fail only after the run folder exists."""
    if "." not in key:
        return False
    parent, name = key.rsplit(".", 1)
    if name.startswith("_") and name.endswith("_"):  # _target_, _partial_: read by instantiate()
        return False
    node = OmegaConf.select(cfg, parent, default=None)
    if not (OmegaConf.is_dict(node) and "_target_" in node):
        return False
    import inspect

    from hydra._internal.utils import _locate

    try:
        parameters = inspect.signature(_locate(node["_target_"])).parameters.values()
    except Exception:  # noqa: BLE001  (a target that cannot be inspected decides for itself)
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return False
    return name not in {p.name for p in parameters}


def _is_read(key: str, cfg: DictConfig, groups, interpolated: set[str]) -> bool:
    if key.split("/")[0] in groups:  # `+experiment=demo`: a config group option
        return True
    if _refused_by_target(cfg, key):
        return False
    if any(key == k or key.startswith(k + ".") for k in READ_WHOLE):
        return True
    if _has_target_above(cfg, key):
        return True
    # Read by an interpolation: the key itself, a sub-tree that holds it, or a key inside it.
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in interpolated)


def _submitit_launcher(hydra_cfg: DictConfig | None) -> bool:
    target = OmegaConf.select(hydra_cfg, "launcher._target_", default=None) if hydra_cfg else None
    return isinstance(target, str) and "submitit" in target


def unread_appended_keys(
    overrides: list[str], cfg: DictConfig, groups, hydra_cfg: DictConfig | None = None
) -> list[str]:
    """One problem per ``+key=value`` override that adds a key nothing reads (``+sigam=0.5``
    trains with the default sigma): no component is given it and no interpolation uses it."""
    interpolated = interpolated_keys(cfg, hydra_cfg)
    if _submitit_launcher(hydra_cfg):
        # conf/hydra/launcher/slurm*.yaml read `slurm.*`; inside a SLURM job the launcher's
        # config arrives resolved, so its interpolations no longer name them.
        interpolated.add("slurm")
    problems = []
    for override in overrides:
        if not override.startswith("+") or override.startswith("++") or "=" not in override:
            continue
        key, value = override[1:].split("=", 1)
        if _is_read(key, cfg, groups, interpolated):
            continue
        added = {key, *(key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1))}
        known = [k for k in dotted_keys(cfg) if k not in added and not k.startswith(key + ".")]
        near = closest_key(key, known)
        hint = (
            f"; did you mean {near}? (set it without '+': {near}={value})"
            if near
            else ("; remove it (python -m src.train --cfg job lists every key)")
        )
        problems.append(f"{override} adds a key that nothing reads{hint}")
    return problems


def refuse_unread_keys(cfg: DictConfig, groups) -> None:
    """Raise one UserError for every appended key that nothing reads (the overrides typed for
    this Hydra run or job; nothing to check outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    problems = unread_appended_keys(list(hydra_cfg.overrides.task), cfg, groups, hydra_cfg)
    if problems:
        raise UserError("; ".join(problems))


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


# `${mkdir:<folder>}` is the folder, created if missing: SQLite (the Optuna study in
# conf/hparams_search/pace_optuna.yaml) opens a database file only in an existing folder.
OmegaConf.register_new_resolver("mkdir", _mkdir, replace=True)
