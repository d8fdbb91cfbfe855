"""Benchmark datamodules (one subclass of :class:`BenchmarkDataModule` per benchmark).

The protocol the rest of the project relies on: ``num_classes``, ``task``, ``protocol``,
``train_size``, ``describe()`` (the start-up line), ``test_set_names`` and ``class_subsets``
(several test sets log ``test/acc/<name>``), and batches ``(image, label, index)``.
"""

from src.data.base import BenchmarkDataModule
from src.data.domain import DomainDataModule
from src.data.fewshot import FEWSHOT_TASKS, FewShotDataModule
from src.data.fgvc import FGVC_TASKS, FGVCDataModule
from src.data.vtab import VTAB_GROUPS, VTAB_TASKS, VTABDataModule

# Benchmark name -> datamodule class (src.data.check and src.report use it).
BENCHMARKS = {
    cls.benchmark: cls
    for cls in (VTABDataModule, FGVCDataModule, FewShotDataModule, DomainDataModule)
}

__all__ = [
    "BENCHMARKS",
    "BenchmarkDataModule",
    "DomainDataModule",
    "FEWSHOT_TASKS",
    "FGVC_TASKS",
    "FGVCDataModule",
    "FewShotDataModule",
    "VTABDataModule",
    "VTAB_GROUPS",
    "VTAB_TASKS",
]
