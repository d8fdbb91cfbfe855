"""Benchmark datamodules (one subclass of :class:`BenchmarkDataModule` per benchmark).

The protocol the rest of the project relies on: ``num_classes``, ``task``, ``protocol``,
``train_size``, ``describe()`` (the start-up line), ``test_set_names`` and ``class_subsets``
(several test sets log ``test/acc/<name>``), and batches ``(image, label, index)``.
"""

from src.data.base import BenchmarkDataModule
from src.data.vtab import VTAB_GROUPS, VTAB_TASKS, VTABDataModule

__all__ = ["BenchmarkDataModule", "VTABDataModule", "VTAB_TASKS", "VTAB_GROUPS"]
