"""ImageNet domain shift: train on 16-shot ImageNet-1K, test on five ImageNet test sets at once.

NOAH's layout. The source set: `imagenet/annotations/train_meta.list.num_shot_<k>.seed_<s>`
(paths under `imagenet/train/`, or `imagenet/images/train/` as CoOp's DATASETS.md unpacks it)
and `imagenet/annotations/val_meta.list` (under `imagenet/val/` or `imagenet/images/val/`); NOAH's
repository keeps it under `few-shot/`. The shifted sets: `<set>/annotations/val_meta.list`, paths
under `<set>/`, for ImageNet-V2, -Sketch, -A and -R, which NOAH's repository keeps under
`domain-generalization/` as `imagenetv2`, `imagenet-sketch`, `imagenet-adversarial`,
`imagenet-rendition`. Each folder is looked up under `domain-generalization/`, `few-shot/`,
`domain-adaptation/` (this project's earlier single folder, with `imagenet-a`/`imagenet-r`) and
the root itself (NOAH's scripts read `data/<set>`); the names are in
``src.data.tables.TASK_FOLDERS`` and ``DOMAIN_FOLDERS``. Every label is an ImageNet-1K class id.

One run tests all five sets and logs each as ``test/acc/<name>`` (imagenet, v2, sketch, a, r).
ImageNet-A and -R cover 200 of the 1000 classes; following the paper (and CoOp, NOAH), their
accuracy is computed with the logits restricted to those 200 classes — the classes present in the
set's list. The source set's val list also serves as the per-epoch validation split.
"""

from __future__ import annotations

from pathlib import Path

from src.data.base import BenchmarkDataModule
from src.data.images import Sample
from src.data.lists import read_list_file
from src.data.tables import DOMAIN_FOLDERS, DOMAIN_TEST_SETS
from src.errors import UserError

SUBSET_SIZES = {"a": 200, "r": 200}  # sets covering only some classes: scored on those only

# Where the source set's images are, per list: NOAH's loader reads <imagenet>/train and
# <imagenet>/val; CoOp's DATASETS.md (which NOAH's README points to) unpacks to images/train, val.
SOURCE_IMAGES = {"train": ("images/train", "train"), "val": ("images/val", "val")}

LAYOUT = (
    "imagenet/annotations/train_meta.list.num_shot_<k>.seed_<s> and val_meta.list, and "
    "<set>/annotations/val_meta.list for imagenetv2, imagenet-sketch, imagenet-a (or "
    "imagenet-adversarial), imagenet-r (or imagenet-rendition), each under <root>/"
    "domain-generalization/, <root>/few-shot/, <root>/domain-adaptation/ or <root>/ (NOAH's "
    "layout)"
)


class DomainDataModule(BenchmarkDataModule):
    """16-shot ImageNet-1K training; five test sets (see module docstring)."""

    benchmark = "domain"
    display = "domain-shift"
    tasks = {"imagenet": 1000}
    layout = LAYOUT
    protocols = {
        "final": "train_meta.list.num_shot_<k>.seed_<s> -> ImageNet val, -V2, -Sketch, -A, -R",
    }
    # A smaller source set in the same layout (a folder beside the four shifted sets, with
    # data.num_classes) serves tests and trials; the 200-class check is then skipped.
    custom_tasks = True

    def __init__(self, *args, shots: int = 16, split_seed: int = 0, crop: bool = True, **kwargs):
        for name, value, low in (("shots", shots, 1), ("split_seed", split_seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"data.{name} must be an integer >= {low}, got {value!r}")
        self.shots = shots
        self.split_seed = split_seed
        self._subsets: dict[str, list[int]] | None = None
        super().__init__(*args, crop=crop, **kwargs)

    @classmethod
    def holds_task(cls, folder: Path) -> bool:
        return (folder / "annotations").is_dir()

    def set_dir(self, name: str) -> Path:
        """The folder of ``name``: the task (the source set) or a shifted set (a key of
        DOMAIN_FOLDERS). A shifted set beside the source folder wins over one found elsewhere."""
        if name == self.task:
            return self.task_dir
        names = DOMAIN_FOLDERS[name]
        beside = [self.task_dir.parent / n for n in names if (self.task_dir.parent / n).is_dir()]
        found = beside[0] if beside else self.locate(names)
        if found is None:
            raise UserError(
                f"no folder {' or '.join(names)} for the domain-shift test set '{name}' beside "
                f"{self.task_dir} or under {self.root}; expected {self.layout}"
            )
        return found

    def splits(self) -> dict[str, str]:
        train = f"{self.task}/train_meta.list.num_shot_{self.shots}.seed_{self.split_seed}"
        return {"train": train, "val": f"{self.task}/val_meta.list"}

    def test_sets(self) -> dict[str, str]:
        # The source set's own test set is its val list; the others are the shifted sets.
        return {
            name: f"{self.task if name == 'imagenet' else key}/val_meta.list"
            for name, key in DOMAIN_TEST_SETS.items()
        }

    def read_split(self, split: str) -> list[Sample]:
        name, list_name = split.split("/")
        folder = self.set_dir(name)
        samples = read_list_file(
            folder / "annotations" / list_name,
            self.num_classes,
            base_dir="",
            layout_hint=self.layout,
            label_advice=self.label_advice(),
        )
        if name == self.task:
            candidates = SOURCE_IMAGES["train" if list_name.startswith("train") else "val"]
        else:
            candidates = (".", "images")
        base = self.image_base(folder, str(samples[0][0]), candidates)
        return [(base / relative, label) for relative, label in samples]

    @property
    def class_subsets(self) -> dict[str, list[int]]:
        if self._subsets is None:
            self._subsets = {}
            for name, size in SUBSET_SIZES.items():
                split = self.test_sets()[name]
                classes = sorted({label for _, label in self.samples(split)})
                if self.task == "imagenet" and len(classes) != size:
                    raise UserError(
                        f"{split}: labels cover {len(classes)} classes, expected the {size} "
                        f"ImageNet-1K ids of ImageNet-{name.upper()}; the list is incomplete"
                    )
                self._subsets[name] = classes
        return self._subsets

    def describe(self) -> str:
        return (
            super().describe()
            + "; ImageNet-A/-R scored with logits restricted to their 200 classes"
        )
