"""Few-shot fine-grained classification in NOAH's layout.

`<root>/few-shot/<name>/images/...` and `<root>/few-shot/<name>/annotations/`:
`train_meta.list.num_shot_{1,2,4,8,16}.seed_{0,1,2}`, `val_meta.list`, `test_meta.list`, lines
`relative/path.jpg <label>` relative to `images/` (NOAH's loader reads Stanford Cars relative to
the dataset folder; both are accepted). Folder names: NOAH's repository ships the lists under
`few-shot/{fgvc-aircraft,food101,oxford-flowers102,oxford-pets,standford-cars}`, the official
PACE code reads `few-shot/stanford-cars`, NOAH's scripts read `<root>/{fgvc_aircraft,food-101,
oxford_flowers102,oxford_pets,stanford_cars}`; all load (``src.data.tables.TASK_FOLDERS``).
NOAH's Oxford Pets 1-shot lists repeat every line; they are used as written (as the official
code does) with a warning. Views: training takes a random 224 crop (+ flip) of the image resized
to 256 on its shorter side, evaluation the central 224 crop (``crop=True``). Any folder in this
layout works as a custom task given ``data.num_classes``; ``python -m
tools.demo_assets.to_fewshot`` writes one from a VTAB-layout task such as the demo's Fashion-MNIST.
"""

from __future__ import annotations

from pathlib import Path

from src.data.base import BenchmarkDataModule
from src.data.images import Sample
from src.data.lists import read_list_file
from src.data.tables import FEWSHOT_TASKS, SHOTS, SPLIT_SEEDS
from src.errors import UserError

LAYOUT = (
    "<root>/few-shot/<name>/annotations/train_meta.list.num_shot_<k>.seed_<s>, val_meta.list, "
    "test_meta.list with lines '<path relative to images/> <label>' (NOAH's few-shot layout)"
)


def train_list_name(shots: int, split_seed: int) -> str:
    return f"train_meta.list.num_shot_{shots}.seed_{split_seed}"


class FewShotDataModule(BenchmarkDataModule):
    """One few-shot dataset at ``shots`` images per class from the ``split_seed``-th draw."""

    benchmark = "fewshot"
    display = "few-shot"
    tasks = FEWSHOT_TASKS
    layout = LAYOUT
    protocols = {
        "tune": "train_meta.list.num_shot_<k>.seed_<s> -> val_meta.list",
        "final": "train_meta.list.num_shot_<k>.seed_<s> -> test_meta.list",
    }
    custom_tasks = True

    def __init__(self, *args, shots: int = 16, split_seed: int = 0, crop: bool = True, **kwargs):
        for name, value, low in (("shots", shots, 1), ("split_seed", split_seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(
                    f"data.{name} must be an integer >= {low}, got {value!r}; "
                    f"the paper uses shots in {SHOTS} and split_seed in {SPLIT_SEEDS}"
                )
        self.shots = shots
        self.split_seed = split_seed
        super().__init__(*args, crop=crop, **kwargs)

    @classmethod
    def holds_task(cls, folder: Path) -> bool:
        return (folder / "annotations").is_dir()

    def splits(self) -> dict[str, str]:
        evaluate = "val_meta.list" if self.protocol == "tune" else "test_meta.list"
        train = train_list_name(self.shots, self.split_seed)
        return {"train": train, "val": evaluate, "test": evaluate}

    def read_split(self, split: str) -> list[Sample]:
        annotations = self.task_dir / "annotations"
        path = annotations / split
        if split.startswith("train_meta") and not path.is_file() and annotations.is_dir():
            present = sorted(p.name for p in annotations.glob("train_meta.list*"))
            raise UserError(
                f"{path} not found; training lists present: {', '.join(present) or 'none'}; "
                f"set data.shots and data.split_seed to one of them"
            )
        # Read relative, then root the paths where the first image really is.
        samples = read_list_file(
            path,
            self.num_classes,
            base_dir="",
            layout_hint=self.layout,
            label_advice=self.label_advice(),
        )
        base = self.image_base(self.task_dir, str(samples[0][0]), ("images", "."))
        return [(base / relative, label) for relative, label in samples]

    def describe(self) -> str:
        return f"{self.shots}-shot (split seed {self.split_seed}) " + super().describe()
