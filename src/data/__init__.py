"""Benchmark datamodules (one subclass of :class:`BenchmarkDataModule` per image benchmark).

The protocol the rest of the project relies on: ``num_classes``, ``task``, ``protocol``,
``train_size``, ``describe()`` (the start-up line), ``test_set_names`` and ``class_subsets``
(several test sets log ``test/acc/<name>``), and batches ``(image, label, index)``.

Classes are imported on first use: importing ``src.data`` (every ``src.data.<module>`` import
runs this file first, ``src.data.tables`` for src.report too) stays free of torch and Lightning.
"""

from __future__ import annotations

from src.data.tables import FEWSHOT_TASKS, FGVC_TASKS, VTAB_GROUPS, VTAB_TASKS
from src.lazy import lazy_exports

# Every benchmark, the one list: its name -> its datamodule, "<module>.<Class>" under src/data/.
# The name is what results, reports (src.report's tables) and conf/data/<name>.yaml call the
# benchmark; the class's `benchmark` attribute says it again (tests/test_data.py holds the two
# together). The text ones build on src.data.text_tokens.TextDataModule, not BenchmarkDataModule.
IMAGE_DATAMODULES = {
    "vtab": "vtab.VTABDataModule",
    "fgvc": "fgvc.FGVCDataModule",
    "fewshot": "fewshot.FewShotDataModule",
    "domain": "domain.DomainDataModule",
}
TEXT_DATAMODULES = {
    "glue": "glue.GLUEDataModule",
    "gsm8k": "gsm8k.GSM8KDataModule",
}
DATAMODULES = IMAGE_DATAMODULES | TEXT_DATAMODULES

# Public class name -> the module (under src/data/) that defines it.
_LAZY = {"BenchmarkDataModule": "base"} | {
    path.rsplit(".", 1)[1]: path.rsplit(".", 1)[0] for path in DATAMODULES.values()
}
_import_class = lazy_exports(__name__, _LAZY)

__all__ = [
    "BENCHMARKS",
    "DATAMODULES",
    "FEWSHOT_TASKS",
    "FGVC_TASKS",
    "IMAGE_DATAMODULES",
    "TEXT_DATAMODULES",
    "VTAB_GROUPS",
    "VTAB_TASKS",
    "benchmark_of",
    *_LAZY,
]


def benchmark_of(target: str) -> str | None:
    """The benchmark whose datamodule ``target`` (a config's ``data._target_``) names, by class:
    ``src.data.VTABDataModule`` and ``src.data.vtab.VTABDataModule`` are VTAB's; else None."""
    class_name = target.rsplit(".", 1)[-1]
    return next((b for b, path in DATAMODULES.items() if path.endswith(f".{class_name}")), None)


def __getattr__(name: str):
    if name == "BENCHMARKS":  # image benchmark name -> datamodule class
        return {b: _import_class(path.rsplit(".", 1)[1]) for b, path in IMAGE_DATAMODULES.items()}
    return _import_class(name)
