"""VTAB-1k in the layout produced by NOAH's preparation script.

`<root>/vtab-1k/<task>/{train800,val200,train800val200,test}.txt`, lines
`images/<split>/000123.jpg <label>` relative to the task folder (NOAH's get_vtab1k.py, the
official PACE code). The task folders may also sit directly under the root, as in RepAdapter's
prepared zip (`<root>/<task>/...`). VTAB resizes every image to
224 x 224 and uses no augmentation (``crop=False``). A folder in the same layout that is not one
of the 19 tasks works too, given ``data.num_classes``.
"""

from __future__ import annotations

from pathlib import Path

from src.data.base import BenchmarkDataModule
from src.data.images import Sample
from src.data.lists import read_list_file
from src.data.tables import VTAB_GROUPS, VTAB_TASKS

__all__ = ["VTAB_GROUPS", "VTAB_TASKS", "VTABDataModule"]

# Which list file plays which role. "tune" selects hyper-parameters on val200; "final" is the
# reported number: train on all 1000 labelled images, evaluate on the official test split.
PROTOCOL_SPLITS: dict[str, dict[str, str]] = {
    "tune": {"train": "train800", "val": "val200", "test": "val200"},
    "final": {"train": "train800val200", "val": "test", "test": "test"},
}

LIST_FILES = ("train800", "val200", "train800val200", "test")

LAYOUT = (
    "<root>/vtab-1k/<task>/train800.txt, val200.txt, train800val200.txt, test.txt with lines "
    "'images/<split>/000123.jpg <label>' (NOAH's VTAB-1k preparation; RepAdapter's zip: "
    "<root>/<task>/...)"
)


class VTABDataModule(BenchmarkDataModule):
    """One VTAB-1k task (see :class:`BenchmarkDataModule` for the batches and the cache)."""

    benchmark = "vtab"
    display = "VTAB"
    tasks = VTAB_TASKS
    layout = LAYOUT
    protocols = {"tune": "train800 -> val200", "final": "train800val200 -> test"}
    custom_tasks = True
    # train800 of a 397-class task need not hold every class; that is VTAB's design.
    train_covers_all_classes = False

    @classmethod
    def holds_task(cls, folder: Path) -> bool:
        return any((folder / f"{name}.txt").is_file() for name in LIST_FILES)

    def splits(self) -> dict[str, str]:
        return PROTOCOL_SPLITS[self.protocol]

    def read_split(self, split: str) -> list[Sample]:
        return read_list_file(
            self.task_dir / f"{split}.txt",
            self.num_classes,
            layout_hint=self.layout,
            label_advice=self.label_advice(),
        )
