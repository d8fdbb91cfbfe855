"""Real list files from the public repositories load unchanged, placed as each repository's own
preparation and loader place them (tests/fixtures/real_lists/README.md says which and where).

Each test copies a few real lines into a tree laid out the way one community prepares it, writes
a tiny image at the path the source's own loader would read, and loads the task through the real
datamodule: setup, then one batch of each loader.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.data.check import main as check_main
from src.data.domain import DomainDataModule
from src.data.fewshot import FewShotDataModule
from src.data.fgvc import FGVCDataModule
from src.data.lists import read_list_file
from src.data.vtab import VTABDataModule
from src.errors import UserError

REAL = Path(__file__).parent / "fixtures" / "real_lists"
SIZE = 16


def write_images(list_file: Path, image_base: Path) -> int:
    """A tiny JPEG at ``image_base/<path>`` for every line of a list or VPT json file."""
    if list_file.suffix == ".json":
        entries = [(path, int(label)) for path, label in json.loads(list_file.read_text()).items()]
    else:
        entries = [
            (relative, label) for relative, label in read_list_file(list_file, 10**6, base_dir="")
        ]
    for relative, label in entries:
        path = image_base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((12, 10, 3), (label * 37) % 256, dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
    return len(entries)


def one_batch_each(dm) -> dict[str, tuple]:
    """setup() for fit and test, then the first batch of every loader."""
    dm.setup("fit")
    dm.setup("test")
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader()}
    tests = dm.test_dataloader()
    tests = tests if isinstance(tests, list) else [tests]
    named = zip(dm.test_set_names, tests, strict=True)
    loaders |= {f"test/{name}": loader for name, loader in named}
    batches = {}
    for role, loader in loaders.items():
        images, labels, indices = next(iter(loader))
        assert images.shape[1:] == (3, SIZE, SIZE), role
        assert 0 <= labels.min() and labels.max() < dm.num_classes, role
        batches[role] = (images, labels, indices)
    return batches


def small(cls, monkeypatch, **classes):
    """Declare the fixtures' class counts (a few real lines cannot cover 100 classes)."""
    monkeypatch.setattr(cls, "tasks", classes)


# -------------------------------------------------------------------------------- VTAB-1k
def plant_vtab(root: Path, under: str) -> Path:
    """The official PACE code's cifar lists at ``<root>/<under>cifar``; images at their paths."""
    task = root / under / "cifar"
    shutil.copytree(REAL / "pace/vtab-1k/cifar", task)
    for listed in task.glob("*.txt"):
        write_images(listed, task)
    return task


@pytest.mark.parametrize("under", ["vtab-1k", "."], ids=["noah-pace", "repadapter-zip"])
def test_vtab_pace_lists_load_in_noah_and_repadapter_layouts(tmp_path, under):
    plant_vtab(tmp_path, under)
    dm = VTABDataModule(str(tmp_path), "cifar", batch_size=2, num_workers=0, img_size=SIZE)
    batches = one_batch_each(dm)
    assert dm.task_dir.samefile(tmp_path / under / "cifar")
    assert dm.train_size == 4 and len(dm.samples("test")) == 3
    # The real labels of PACE's first test lines (43 59 ...) arrive as listed.
    assert set(batches["test/test"][1].tolist()) <= {43, 59, 78}


def test_checker_finds_vtab_tasks_without_the_benchmark_folder(tmp_path, capsys):
    plant_vtab(tmp_path, ".")
    code = check_main([str(tmp_path), "--benchmark", "vtab"])
    out = capsys.readouterr().out
    assert code == 0
    assert (
        f"vtab: task folders directly under {tmp_path} (no vtab-1k/ folder); the datamodules "
        f"read them there: pass data.root={tmp_path}" in out
    )
    assert "vtab/cifar                   ok" in out and "not present" not in out


# ------------------------------------------------------------------------------------ FGVC
@pytest.mark.parametrize("under", ["fgvc", "."], ids=["fgvc-folder", "vpt-datapath"])
def test_vpt_cub_json_with_zero_padded_string_labels(tmp_path, monkeypatch, under):
    small(FGVCDataModule, monkeypatch, cub=3)
    task = tmp_path / under / "CUB_200_2011"
    shutil.copytree(REAL / "vpt/CUB_200_2011", task)
    for split in ("train", "val", "test"):
        write_images(task / f"{split}.json", task / "images")
    dm = FGVCDataModule(str(tmp_path), "cub", batch_size=2, num_workers=0, img_size=SIZE)
    one_batch_each(dm)
    assert dm.label_of == {1: 0, 2: 1, 3: 2}  # "001".."003", in VPT's sorted order
    assert [label for _, label in dm.samples("train")] == [0, 1, 2]
    assert dm.samples("test")[0][0] == task / "images" / (
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg"
    )


def test_json_label_that_is_not_a_number_is_one_clear_error(tmp_path, monkeypatch):
    small(FGVCDataModule, monkeypatch, cub=3)
    task = tmp_path / "fgvc/CUB_200_2011"
    shutil.copytree(REAL / "vpt/CUB_200_2011", task)
    (task / "val.json").write_text('{"a.jpg": "Laysan"}')
    dm = FGVCDataModule(str(tmp_path), "cub", num_workers=0)
    with pytest.raises(UserError, match="label 'Laysan' of 'a.jpg' is not an integer"):
        dm.samples("val")


# -------------------------------------------------------------------------------- few-shot
# Project task -> NOAH repository's folder, NOAH scripts' folder, official PACE code's folder.
FEWSHOT = {
    "fgvc-aircraft": ("fgvc-aircraft", "fgvc_aircraft", "fgvc-aircraft"),
    "food101": ("food101", "food-101", "food101"),
    "oxford-flowers102": ("oxford-flowers102", "oxford_flowers102", "oxford-flowers102"),
    "oxford-pets": ("oxford-pets", "oxford_pets", "oxford-pets"),
    "stanford-cars": ("standford-cars", "stanford_cars", "stanford-cars"),
}
# Where each source's loader reads the images: NOAH's reads Stanford Cars (folder stanford_cars)
# relative to the folder and the others under images/; the official PACE code all under images/.
LAYOUTS = {
    "noah-repo": (0, "few-shot", lambda task: "." if task == "stanford-cars" else "images"),
    "noah-scripts": (1, ".", lambda task: "." if task == "stanford-cars" else "images"),
    "pace": (2, "few-shot", lambda task: "images"),
}


def plant_fewshot(root: Path, task: str, layout: str) -> Path:
    index, under, images = LAYOUTS[layout]
    folder = root / under / FEWSHOT[task][index]
    shutil.copytree(REAL / "noah/few-shot" / FEWSHOT[task][0], folder)
    for listed in (folder / "annotations").iterdir():
        write_images(listed, folder / images(task))
    return folder


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("task", list(FEWSHOT))
def test_noah_fewshot_lists_load_in_every_layout(tmp_path, monkeypatch, task, layout):
    small(FewShotDataModule, monkeypatch, **{task: 3})
    folder = plant_fewshot(tmp_path, task, layout)
    dm = FewShotDataModule(str(tmp_path), task, shots=1, batch_size=2, num_workers=0, img_size=SIZE)
    one_batch_each(dm)
    assert dm.task_dir.samefile(folder)
    assert all(path.is_file() for path, _ in dm.samples(dm.splits()["train"]))


def test_oxford_pets_repeated_lines_are_used_as_listed_and_said(tmp_path, monkeypatch, caplog):
    small(FewShotDataModule, monkeypatch, **{"oxford-pets": 3})
    plant_fewshot(tmp_path, "oxford-pets", "noah-repo")
    dm = FewShotDataModule(str(tmp_path), "oxford-pets", shots=1, num_workers=0, img_size=SIZE)
    with caplog.at_level(logging.WARNING, logger="src.data.base"):
        assert dm.train_size == 6  # as the official code trains: every line, repeats included
    assert "lists 6 images but only 3 distinct ones (3 lines repeat another)" in caplog.text


def test_checker_on_noah_fewshot_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("src.data.fewshot.SHOTS", (1,))
    monkeypatch.setattr("src.data.fewshot.SPLIT_SEEDS", (0,))
    small(FewShotDataModule, monkeypatch, **dict.fromkeys(FEWSHOT, 3))
    for task in FEWSHOT:
        plant_fewshot(tmp_path, task, "noah-repo")
    shutil.copytree(REAL / "noah/few-shot/imagenet", tmp_path / "few-shot/imagenet")
    code = check_main([str(tmp_path), "--benchmark", "fewshot", "--sample", "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    for task in FEWSHOT:
        assert f"fewshot/{task:<20} ok" in out  # standford-cars is found as stanford-cars
    # The repeated lines are flagged with the real count; NOAH's imagenet/ is domain shift's.
    assert "train_meta.list.num_shot_1.seed_0: 6 lines, 3 distinct images, 3/3 classes" in out
    assert "3 of its 6 lines repeat an earlier line, so it holds 3 images, not 6" in out
    assert "imagenet" not in out
    # few-shot/ is few-shot's folder even though domain shift also looks there for imagenet/.
    assert f"fewshot: {tmp_path}/few-shot\n" in out


def test_label_beyond_a_known_task_gets_advice_that_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("src.data.fewshot.SHOTS", (1,))
    monkeypatch.setattr("src.data.fewshot.SPLIT_SEEDS", (0,))
    small(FewShotDataModule, monkeypatch, **{"food101": 3})
    folder = plant_fewshot(tmp_path, "food101", "pace")
    listed = folder / "annotations/test_meta.list"
    listed.write_text(listed.read_text() + "apple_pie/1214326.jpg 57\n")
    code = check_main([str(tmp_path), "--benchmark", "fewshot"])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        f"{listed}:4: label 57 is outside [0, 3); few-shot 'food101' has 3 classes, so the "
        "file belongs to another task or is damaged" in out
    )
    # data.num_classes cannot differ from a known task's count, so it is never the advice.
    assert "num_classes" not in out
    with pytest.raises(UserError, match="has 3 classes but data.num_classes=58"):
        FewShotDataModule(str(tmp_path), "food101", num_classes=58)


def test_kshot_list_without_k_images_per_class_is_flagged(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("src.data.fewshot.SHOTS", (1,))
    monkeypatch.setattr("src.data.fewshot.SPLIT_SEEDS", (0,))
    small(FewShotDataModule, monkeypatch, **{"fgvc-aircraft": 3})
    folder = plant_fewshot(tmp_path, "fgvc-aircraft", "pace")
    listed = folder / "annotations/train_meta.list.num_shot_1.seed_0"
    listed.write_text(listed.read_text() + "1514522.jpg 0\n")  # a real test image of class 0
    write_images(listed, folder / "images")
    check_main([str(tmp_path), "--benchmark", "fewshot"])
    out = capsys.readouterr().out
    assert "train_meta.list.num_shot_1.seed_0: a 1-shot list, but some classes have 2" in out


# ---------------------------------------------------------------------------- domain shift
SHIFTED = ("imagenet-adversarial", "imagenet-rendition", "imagenet-sketch", "imagenetv2")


def plant_domain(root: Path, source_under: str, sets_under: str) -> None:
    """NOAH's ImageNet lists with images where NOAH's loader reads them (train/, val/), and the
    four shifted sets with theirs at <set>/<path>."""
    source = root / source_under / "imagenet"
    shutil.copytree(REAL / "noah/few-shot/imagenet", source)
    write_images(source / "annotations/train_meta.list.num_shot_1.seed_0", source / "train")
    write_images(source / "annotations/val_meta.list", source / "val")
    for name in SHIFTED:
        folder = root / sets_under / name
        shutil.copytree(REAL / "noah/domain-generalization" / name, folder)
        write_images(folder / "annotations/val_meta.list", folder)


@pytest.mark.parametrize(
    "source_under, sets_under",
    [("few-shot", "domain-generalization"), (".", ".")],
    ids=["noah-repo", "noah-scripts"],
)
def test_noah_domain_shift_lists_load(tmp_path, monkeypatch, source_under, sets_under):
    small(DomainDataModule, monkeypatch, imagenet=14)
    monkeypatch.setattr("src.data.domain.SUBSET_SIZES", {"a": 3, "r": 3})
    plant_domain(tmp_path, source_under, sets_under)
    dm = DomainDataModule(
        str(tmp_path), "imagenet", shots=1, batch_size=2, num_workers=0, img_size=SIZE
    )
    batches = one_batch_each(dm)
    tests = {f"test/{name}" for name in ("imagenet", "v2", "sketch", "a", "r")}
    assert set(batches) == {"train", "val"} | tests
    assert dm.train_size == 14
    assert dm.class_subsets == {"a": [6, 11, 13], "r": [1, 2, 4]}
    # A path with spaces (ImageNet-A's file names) is read whole.
    first_a = dm.samples(dm.test_sets()["a"])[0][0]
    assert first_a.name == "0.006639_koala _ American bullfrog_0.6658246.jpg" and first_a.is_file()


def test_checker_on_noah_domain_tree_finds_every_image(tmp_path, monkeypatch, capsys):
    small(DomainDataModule, monkeypatch, imagenet=14)
    monkeypatch.setattr("src.data.domain.SUBSET_SIZES", {"a": 3, "r": 3})
    monkeypatch.setattr("src.data.fewshot.SPLIT_SEEDS", (0,))
    monkeypatch.setattr("src.data.check._variants", lambda cls: [{"shots": 1, "split_seed": 0}])
    plant_domain(tmp_path, "few-shot", "domain-generalization")
    code = check_main([str(tmp_path), "--benchmark", "domain", "--sample", "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "domain/imagenet              ok" in out
    assert "not found" not in out and "remove" not in out
    assert "a/val_meta.list: 3 images, 3/14 classes" in out


def test_docs_name_every_accepted_folder():
    """docs/data.md's table says which names map to which; it must not drift from the code's."""
    from src.data.tables import CONTAINERS, DOMAIN_FOLDERS, TASK_FOLDERS

    docs = (Path(__file__).parents[1] / "docs/data.md").read_text()
    names = {c for cs in CONTAINERS.values() for c in cs}
    names |= {
        n for b in ("fgvc", "fewshot", "domain") for ns in TASK_FOLDERS[b].values() for n in ns
    }
    names |= {n for ns in DOMAIN_FOLDERS.values() for n in ns}
    assert not [name for name in sorted(names) if f"`{name}" not in docs]
