"""Hydra's and OmegaConf's own errors as one line that says what to type instead.

Hydra reports an unknown group option, an unknown key or an unparsable override with several
lines (and, for some, a traceback) before the task function runs. :func:`describe` turns each
into one sentence: the valid options for a group, the closest real key for a typo, the type a
value must have. No torch here: these errors come before anything is built.
"""

from __future__ import annotations

import re

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import OmegaConfBaseException

from src import CONF_DIR
from src.cli.validation import closest_key

# What to give for a required key, by key.
REQUIRED = {"run_dir": "the folder of a finished training run, e.g. logs/train/runs/<time>"}


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def known_keys(config_name: str) -> list[str]:
    """Every key of the entry's default config (for "did you mean"), or none if it fails."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.cli.validation import dotted_keys

    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return dotted_keys(compose(config_name))
    except Exception:  # noqa: BLE001  (only a hint; the error itself is reported regardless)
        return []


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _sentence(*parts: str | None) -> str:
    """Parts joined by '; ' (by ' ' after a question)."""
    text = ""
    for part in filter(None, parts):
        text += ("" if not text else " " if text.endswith("?") else "; ") + part
    return text


def _did_you_mean(name: str, candidates) -> str | None:
    near = closest_key(name, candidates)
    return f"did you mean {near}?" if near else None


def describe(err: BaseException, config_name: str = "train") -> str | None:
    """One line for a Hydra/OmegaConf error a user caused, or None for anything else."""
    message = str(err)
    if isinstance(err, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", message)
        if found and "/" in found.group(1):
            group, option = found.group(1).rsplit("/", 1)
            options = group_options(group)
            return _sentence(
                f"unknown {group} '{option}'",
                _did_you_mean(option, options),
                f"valid {group} options: {', '.join(options)}",
            )
        return _first_line(message)
    if isinstance(err, OverrideParseException):
        return (
            f"cannot parse the override ({_first_line(message)}); write key=value, quoting "
            "values with brackets or spaces: 'key=[a,b]' (https://hydra.cc/docs/advanced/"
            "override_grammar/basic/)"
        )
    if isinstance(err, ConfigCompositionException):
        return _composition(err, message, config_name)
    if isinstance(err, InstantiationException):
        return _not_a_parameter(err, message)
    required = re.search(r"Missing mandatory value: ([\w.]+)", message)
    if required:
        key = required.group(1)
        return f"{key} is required: add {key}=<{REQUIRED.get(key, 'a value')}>"
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        return f"{key}: {_first_line(message)}" if key else _first_line(message)
    return None


def _not_a_parameter(err: BaseException, message: str) -> str | None:
    """``+data.foo=1`` reaches the datamodule as a keyword it does not take."""
    cause = err.__cause__
    if not isinstance(cause, TypeError) or "argument" not in str(cause):
        return None  # an error inside the target: a bug, keep its traceback
    target = re.search(r"target '([^']+)'", message)
    node = re.search(r"full_key: (\S+)", message)
    argument = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    where = target.group(1) if target else "its target"
    if node and argument:
        near = closest_key(argument.group(1), _parameters(where))
        fix = f"did you mean {node.group(1)}.{near}?" if near else "remove it"
        return f"{node.group(1)}.{argument.group(1)} is not a parameter of {where}; {fix}"
    return f"{_first_line(cause)} (config of {where})"


def _parameters(target: str) -> list[str]:
    """The keyword parameters of a ``_target_`` (already imported by the failed instantiate)."""
    import inspect

    from hydra._internal.utils import _locate

    try:
        return list(inspect.signature(_locate(target)).parameters)
    except Exception:  # noqa: BLE001  (only a hint)
        return []


def _composition(err: BaseException, message: str, config_name: str) -> str:
    unknown = re.search(r"Could not override '([^']+)'", message)
    if unknown and "No match in the defaults list" in message:
        name = unknown.group(1)
        groups = config_groups()
        return _sentence(
            f"unknown config group '{name}'",
            _did_you_mean(name, groups),
            f"groups: {', '.join(groups)}",
        )
    if unknown:
        name = unknown.group(1)
        return _sentence(
            f"unknown key '{name}'",
            _did_you_mean(name, known_keys(config_name)),
            f"to add a new key on purpose, write +{name}=...",
        )
    merging = re.search(r"Error merging override (\S+)", message)
    if merging:
        cause = _first_line(err.__cause__) if err.__cause__ else ""
        cause = re.sub(r"\s*full_key:.*", "", cause)
        return f"{merging.group(1)}: {cause or 'cannot be merged'}"
    if "Could not append to config" in message:
        key = re.search(r"at '([^']+)'", message)
        name = key.group(1) if key else "the key"
        return f"{name} exists already: set it without '+' ({name}=...)"
    return _first_line(message)
