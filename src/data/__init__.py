"""Benchmark datamodules (one subclass of :class:`BenchmarkDataModule` per benchmark).

The protocol the rest of the project relies on: ``num_classes``, ``task``, ``protocol``,
``train_size``, ``describe()`` (the start-up line), ``test_set_names`` and ``class_subsets``
(several test sets log ``test/acc/<name>``), and batches ``(image, label, index)``.

Names are imported on first use, so ``src.data.tables`` stays free of torch and Lightning.
"""

from __future__ import annotations

import importlib

from src.data.tables import FEWSHOT_TASKS, FGVC_TASKS, VTAB_GROUPS, VTAB_TASKS

_LAZY = {
    "BenchmarkDataModule": "src.data.base",
    "VTABDataModule": "src.data.vtab",
    "FGVCDataModule": "src.data.fgvc",
    "FewShotDataModule": "src.data.fewshot",
    "DomainDataModule": "src.data.domain",
}

__all__ = ["BENCHMARKS", "FEWSHOT_TASKS", "FGVC_TASKS", "VTAB_GROUPS", "VTAB_TASKS", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "BENCHMARKS":  # benchmark name -> datamodule class
        classes = [__getattr__(n) for n in _LAZY if n != "BenchmarkDataModule"]
        return {cls.benchmark: cls for cls in classes}
    raise AttributeError(f"module 'src.data' has no attribute '{name}'")
