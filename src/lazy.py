"""Lazy package exports: a public name is imported from the module that defines it on first use.

``src.pace``, ``src.adapters`` and ``src.data`` must import without torch (the torch-free front
door and ``--help`` import them), yet offer their torch-side names at the package level. Each
declares which of its modules defines each name; :func:`lazy_exports` is the module
``__getattr__`` (PEP 562) that imports it on first access and keeps it in the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, defined_in: Mapping[str, str], *, before: Callable[[], None] | None = None
) -> Callable[[str], object]:
    """The ``__getattr__`` of ``package``: ``name`` comes from ``package.<defined_in[name]>``,
    imported on first access, after ``before()`` (e.g. registering every plugin module)."""

    def __getattr__(name: str) -> object:
        if name not in defined_in:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if before is not None:
            before()
        value = getattr(importlib.import_module(f"{package}.{defined_in[name]}"), name)
        setattr(sys.modules[package], name, value)  # later accesses skip __getattr__
        return value

    return __getattr__
