"""ImageNet domain shift: train on 16-shot ImageNet-1K, test on five ImageNet test sets at once.

NOAH's layout, under `<root>/domain-adaptation/` (or `<root>` itself):
`imagenet/annotations/train_meta.list.num_shot_16.seed_{0,1,2}` (paths under
`imagenet/images/train/`), `imagenet/annotations/val_meta.list` (under `imagenet/images/val/`),
and `<set>/annotations/val_meta.list` for `imagenetv2`, `imagenet-sketch`, `imagenet-a`,
`imagenet-r` (paths under `<set>/`). Every label is an ImageNet-1K class id.

One run tests all five sets and logs each as ``test/acc/<name>`` (imagenet, v2, sketch, a, r).
ImageNet-A and -R cover 200 of the 1000 classes; following the paper (and CoOp, NOAH), their
accuracy is computed with the logits restricted to those 200 classes — the classes present in the
set's list. The source set's val list also serves as the per-epoch validation split.
"""

from __future__ import annotations

from src.data.base import BenchmarkDataModule
from src.data.images import Sample
from src.data.lists import read_list_file
from src.data.tables import DOMAIN_TEST_SETS as TEST_SETS
from src.errors import UserError

SUBSET_SIZES = {"a": 200, "r": 200}  # sets covering only some classes: scored on those only

LAYOUT = (
    "<root>/domain-adaptation/imagenet/annotations/train_meta.list.num_shot_16.seed_<s> and "
    "val_meta.list, and <set>/annotations/val_meta.list for imagenetv2, imagenet-sketch, "
    "imagenet-a, imagenet-r (NOAH's domain-generalisation layout)"
)


class DomainDataModule(BenchmarkDataModule):
    """16-shot ImageNet-1K training; five test sets (see module docstring)."""

    benchmark = "domain"
    display = "domain-shift"
    container = "domain-adaptation"
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

    def folders_used(self) -> tuple[str, ...]:
        return (self.task, *(folder for folder in TEST_SETS.values() if folder))

    def splits(self) -> dict[str, str]:
        train = f"{self.task}/train_meta.list.num_shot_{self.shots}.seed_{self.split_seed}"
        return {"train": train, "val": f"{self.task}/val_meta.list"}

    def test_sets(self) -> dict[str, str]:
        return {
            name: f"{folder or self.task}/val_meta.list" for name, folder in TEST_SETS.items()
        }

    def read_split(self, split: str) -> list[Sample]:
        folder_name, list_name = split.split("/")
        folder = self.task_dir.parent / folder_name
        path = folder / "annotations" / list_name
        samples = read_list_file(path, self.num_classes, base_dir="", layout_hint=self.layout)
        if folder_name == self.task:
            images = "images/train" if list_name.startswith("train") else "images/val"
            base = self.image_base(folder, str(samples[0][0]), (images, "."))
        else:
            base = self.image_base(folder, str(samples[0][0]), (".", "images"))
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
                        f"ImageNet-1K ids of {TEST_SETS[name]}; the list is incomplete"
                    )
                self._subsets[name] = classes
        return self._subsets

    def describe(self) -> str:
        return (
            super().describe()
            + "; ImageNet-A/-R scored with logits restricted to their 200 classes"
        )
