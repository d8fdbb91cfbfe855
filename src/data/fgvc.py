"""FGVC: five fine-grained datasets with VPT's splits.

`<root>/fgvc/<dataset>/{train,val,test}.json`, each `{"relative/path.jpg": label id}` with paths
relative to the dataset's image folder (`images/` for CUB and NABirds, `Images/` for Stanford
Dogs, the dataset folder itself for Flowers and Cars; found automatically). The dataset folder
may have the project's name or the archive's name VPT uses (`CUB_200_2011`, `OxfordFlower`, ...;
``src.data.tables.TASK_FOLDERS``). Label ids are the datasets' own (e.g. CUB 1..200), written as
integers or as zero-padded strings ("132"); as in VPT they are mapped to 0..C-1 in the sorted
order of the ids in train.json. Protocols: tune trains on train.json and validates on val.json;
final trains on both and tests on test.json. Views as in VPT: random 224 crop + flip of the image
resized to 256 on its shorter side for training, the central 224 crop for evaluation.
"""

from __future__ import annotations

from pathlib import Path

from src.data.base import BenchmarkDataModule
from src.data.images import Sample
from src.data.lists import read_json_split
from src.data.tables import FGVC_TASKS
from src.errors import UserError

_IMAGE_FOLDERS = ("images", "Images", ".")

LAYOUT = (
    "<root>/fgvc/<dataset>/train.json, val.json, test.json mapping image path -> label "
    "(VPT's FGVC splits)"
)


class FGVCDataModule(BenchmarkDataModule):
    """One FGVC dataset (see :class:`BenchmarkDataModule` for the batches and the cache)."""

    benchmark = "fgvc"
    display = "FGVC"
    tasks = FGVC_TASKS
    layout = LAYOUT
    protocols = {"tune": "train.json -> val.json", "final": "train.json + val.json -> test.json"}

    def __init__(self, *args, crop: bool = True, **kwargs):
        super().__init__(*args, crop=crop, **kwargs)
        self._label_of: dict[int, int] | None = None

    @classmethod
    def holds_task(cls, folder: Path) -> bool:
        return (folder / "train.json").is_file()

    def splits(self) -> dict[str, str]:
        if self.protocol == "tune":
            return {"train": "train", "val": "val", "test": "val"}
        return {"train": "train+val", "val": "test", "test": "test"}

    @property
    def label_of(self) -> dict[int, int]:
        """Dataset label id -> class index, from the sorted ids of train.json (VPT's rule)."""
        if self._label_of is None:
            path = self.task_dir / "train.json"
            ids = sorted({label for _, label in read_json_split(path, self.layout)})
            if len(ids) != self.num_classes:
                raise UserError(
                    f"{path} has {len(ids)} distinct labels but FGVC '{self.task}' has "
                    f"{self.num_classes} classes; the file is incomplete or data.task is wrong"
                )
            self._label_of = {label: index for index, label in enumerate(ids)}
        return self._label_of

    def read_split(self, split: str) -> list[Sample]:
        path = self.task_dir / f"{split}.json"
        pairs = read_json_split(path, self.layout)
        base = self.image_base(self.task_dir, pairs[0][0], _IMAGE_FOLDERS)
        samples = []
        for relative, label in pairs:
            if label not in self.label_of:
                raise UserError(
                    f"{path}: label {label} of '{relative}' does not occur in train.json; "
                    f"every class must have training images, fix the split files"
                )
            samples.append((base / relative, self.label_of[label]))
        return samples
