"""VTAB-1k data module, list-file reader and image decoding, on real JPEG fixtures."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch.utils.data import SequentialSampler

import src.data
from src.data import DATAMODULES, VTAB_GROUPS, VTAB_TASKS, VTABDataModule, benchmark_of
from src.data import images as images_module
from src.data.base import EpochShuffle
from src.data.images import decode_image
from src.data.lists import read_list_file
from src.data.synthetic import write_vtab_task
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalise
from src.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf"
N_TRAIN, N_VAL, N_TEST, SIZE, CLASSES = 32, 16, 24, 32, 4


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtab")
    write_vtab_task(root, "toy", CLASSES, N_TRAIN, N_VAL, N_TEST, SIZE)
    return root


def make_dm(root, task="toy", **kwargs) -> VTABDataModule:
    kwargs = {"num_classes": CLASSES, "img_size": SIZE, "batch_size": 8, "num_workers": 0, **kwargs}
    return VTABDataModule(root=str(root), task=task, **kwargs)


def list_labels(task_dir: Path, split: str) -> list[int]:
    return [int(line.split()[1]) for line in (task_dir / f"{split}.txt").read_text().splitlines()]


def collect(loader):
    images, labels, indices = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels), torch.cat(indices)


# ----------------------------------------------------------------------------- the benchmarks
def test_the_benchmark_list_names_each_datamodule_and_its_config():
    classes = set()
    for name, path in DATAMODULES.items():
        module, class_name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(f"src.data.{module}"), class_name)
        assert cls.benchmark == name and getattr(src.data, class_name) is cls
        assert benchmark_of(f"src.data.{path}") == benchmark_of(f"src.data.{class_name}") == name
        assert get_class(OmegaConf.load(CONF / "data" / f"{name}.yaml")._target_) is cls
        classes.add(cls)
    assert set(src.data.BENCHMARKS.values()) == {
        cls for cls in classes if issubclass(cls, src.data.BenchmarkDataModule)
    }
    assert benchmark_of("src.data.synthetic.SomethingElse") is None


def test_importing_the_data_package_and_the_report_loads_no_torch():
    code = "import sys, src.data, src.data.tables, src.report; print(*sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "src.data.tables" in out.stdout.split()
    assert {"torch", "lightning", "src.data.base"} & set(out.stdout.split()) == set()


# ------------------------------------------------------------------------------- task tables
def test_task_table_matches_spec():
    assert len(VTAB_TASKS) == 19
    assert sorted(sum(VTAB_GROUPS.values(), [])) == sorted(VTAB_TASKS)
    assert [len(VTAB_GROUPS[g]) for g in ("Natural", "Specialized", "Structured")] == [7, 4, 8]
    assert VTAB_TASKS["cifar"] == 100 and VTAB_TASKS["sun397"] == 397
    assert VTAB_TASKS["smallnorb_ele"] == 9 and VTAB_TASKS["patch_camelyon"] == 2


# ------------------------------------------------------------------------------ protocols
@pytest.mark.parametrize(
    "protocol, train_split, n_train, eval_split, n_eval",
    [
        ("tune", "train800", N_TRAIN, "val200", N_VAL),
        ("final", "train800val200", N_TRAIN + N_VAL, "test", N_TEST),
    ],
)
def test_protocol_splits(toy_root, protocol, train_split, n_train, eval_split, n_eval):
    dm = make_dm(toy_root, protocol=protocol)
    assert dm.num_classes == CLASSES and dm.protocol == protocol and dm.task == "toy"
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_size == n_train
    task_dir = toy_root / "vtab-1k" / "toy"

    images, labels, indices = collect(dm.train_dataloader())
    assert images.shape == (n_train, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    # Shuffled order, but every index appears once and carries its own list-file label.
    assert sorted(indices.tolist()) == list(range(n_train))
    expected = torch.tensor(list_labels(task_dir, train_split))
    assert torch.equal(labels, expected[indices])

    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        images, labels, indices = collect(loader)
        assert images.shape == (n_eval, 3, SIZE, SIZE)
        assert indices.tolist() == list(range(n_eval))
        assert labels.tolist() == list_labels(task_dir, eval_split)
    assert dm.dataset("val") is dm.dataset("test")


def test_items_are_imagenet_normalised(toy_root):
    dm = make_dm(toy_root, protocol="tune")
    dm.setup("fit")
    image, label, index = dm.dataset("val")[3]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert int(label) == 3 % CLASSES and index == 3
    raw = decode_image(toy_root / "vtab-1k/toy/images/val200/000003.jpg", SIZE)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(image, (raw.float() / 255 - mean) / std, atol=1e-6)
    # Any uint8 image maps into [(0-mean)/std, (1-mean)/std]; the fixture is not saturated.
    assert image.min() >= -2.2 and image.max() <= 2.7 and image.std() > 0.1
    batch = torch.stack([raw, raw])
    assert torch.allclose(normalise(batch)[1], image, atol=1e-6)


def test_img_size_override(toy_root):
    dm = make_dm(toy_root, protocol="tune", img_size=20)
    dm.setup("fit")
    assert dm.dataset("train")[0][0].shape == (3, 20, 20)


@pytest.mark.parametrize("suffix", ["", "vtab-1k"])
def test_root_may_be_parent_or_vtab_folder(toy_root, suffix):
    dm = make_dm(toy_root / suffix if suffix else toy_root, protocol="tune")
    dm.setup("fit")
    assert dm.task_dir == toy_root / "vtab-1k" / "toy"
    assert len(dm.dataset("train")) == N_TRAIN


def test_each_split_decoded_once(toy_root, monkeypatch, caplog):
    calls = []
    real = images_module.decode_image

    def counting(path, size, fit="stretch"):
        calls.append(Path(path))
        return real(path, size, fit)

    monkeypatch.setattr(images_module, "decode_image", counting)
    dm = make_dm(toy_root, protocol="final")
    with caplog.at_level(logging.INFO, logger="src.data.images"):
        dm.setup("fit")
        dm.setup("test")  # final: test is the validation split, already decoded
        dm.setup("fit")
    assert len(calls) == N_TRAIN + N_VAL + N_TEST
    decoded_lines = [r for r in caplog.records if "decoded" in r.getMessage()]
    assert len(decoded_lines) == 2
    for _ in range(2):  # two epochs
        collect(dm.train_dataloader())
        collect(dm.val_dataloader())
    collect(dm.test_dataloader())
    assert len(calls) == N_TRAIN + N_VAL + N_TEST


def test_train_size_needs_no_decoding(toy_root, monkeypatch):
    monkeypatch.setattr(images_module, "decode_image", lambda *a: pytest.fail("decoded"))
    assert make_dm(toy_root, protocol="tune").train_size == N_TRAIN


def test_disk_cache_above_memory_budget(toy_root, tmp_path):
    cached = make_dm(toy_root, protocol="tune")
    on_disk = make_dm(toy_root, protocol="tune", cache_limit_gb=0.0, cache_dir=str(tmp_path))
    assert on_disk.dataset("val").on_disk and not cached.dataset("val").on_disk
    assert len(list(tmp_path.glob("*.npy"))) == 1
    for i in (0, N_VAL - 1):
        a, b = cached.dataset("val")[i], on_disk.dataset("val")[i]
        assert torch.equal(a[0], b[0]) and int(a[1]) == int(b[1]) and a[2] == b[2]


def test_disk_cache_decodes_each_image_once_across_epochs_and_runs(toy_root, tmp_path, monkeypatch):
    calls = []
    real = images_module.decode_image

    def counting(path, size, fit="stretch"):
        calls.append(path)
        return real(path, size, fit)

    monkeypatch.setattr(images_module, "decode_image", counting)
    for _run in range(2):  # the second run reuses the first run's cache file
        dm = make_dm(toy_root, protocol="tune", cache_limit_gb=0.0, cache_dir=str(tmp_path))
        dm.setup("fit")
        for _epoch in range(2):
            collect(dm.train_dataloader())
            collect(dm.val_dataloader())
    assert len(calls) == N_TRAIN + N_VAL
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob("*partial*"))


def test_memory_budget_is_shared_by_all_splits(toy_root, tmp_path):
    one_split = N_TRAIN * 3 * SIZE * SIZE  # train800 fits, val200 no longer does
    dm = make_dm(toy_root, protocol="tune", cache_limit_gb=one_split / 1e9, cache_dir=str(tmp_path))
    dm.setup("fit")
    assert not dm.dataset("train").on_disk and dm.dataset("val").on_disk


def test_dataloader_settings(toy_root):
    dm = make_dm(toy_root, protocol="tune", num_workers=1, pin_memory=False)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    # the training order is a shuffle whose position a checkpoint keeps (mid-epoch resume)
    assert isinstance(train.sampler, EpochShuffle) and not train.drop_last
    assert isinstance(val.sampler, SequentialSampler)
    assert train.persistent_workers and val.persistent_workers
    assert not make_dm(toy_root, protocol="tune").train_dataloader().persistent_workers


def test_drop_last_that_drops_every_batch_is_a_user_error(toy_root):
    """recipe.drop_last with fewer training images than one batch would fit zero steps and then
    test the untrained model; it stops with the fix instead (e.g. recipe=paper at 1 shot)."""
    train_size = len(make_dm(toy_root, protocol="tune").dataset("train"))
    fits = make_dm(toy_root, protocol="tune", batch_size=train_size, drop_last=True)
    assert len(fits.train_dataloader()) == 1
    too_big = make_dm(toy_root, protocol="tune", batch_size=train_size + 1, drop_last=True)
    with pytest.raises(UserError, match=r"data.batch_size=.*recipe.drop_last=false"):
        too_big.train_dataloader()


def test_fixture_classes_are_separable(toy_root):
    """Nearest class mean on raw pixels already solves the toy task, so a tiny ViT can too."""
    dm = make_dm(toy_root, protocol="tune")
    train_x, train_y, _ = collect(dm.train_dataloader())
    test_x, test_y, _ = collect(dm.test_dataloader())
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(CLASSES)]).flatten(1)
    predicted = torch.cdist(test_x.flatten(1), means).argmin(1)
    assert (predicted == test_y).float().mean() == 1.0


# --------------------------------------------------------------------------------- tasks
def test_custom_task_needs_num_classes(toy_root):
    with pytest.raises(UserError) as error:
        VTABDataModule(root=str(toy_root), task="toy")
    message = str(error.value)
    assert "unknown VTAB task 'toy'" in message and "data.num_classes" in message
    for task in VTAB_TASKS:
        assert task in message


def test_known_task_uses_table_class_count(tmp_path):
    write_vtab_task(tmp_path, "eurosat", num_classes=10, n_train=10, n_val=10, n_test=10)
    dm = VTABDataModule(root=str(tmp_path), task="eurosat", num_workers=0, img_size=16)
    assert dm.num_classes == 10
    dm.setup("fit")
    assert len(dm.dataset("train")) == 20
    with pytest.raises(UserError, match=r"'eurosat' has 10 classes but data.num_classes=7"):
        VTABDataModule(root=str(tmp_path), task="eurosat", num_classes=7)


# -------------------------------------------------------------------------------- errors
def test_unknown_protocol(toy_root):
    with pytest.raises(UserError) as error:
        make_dm(toy_root, protocol="train")
    message = str(error.value)
    assert "'train'" in message and "tune" in message and "final" in message


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as error:
        make_dm(missing).setup("fit")
    message = str(error.value)
    assert str(missing) in message and "vtab-1k/<task>/train800.txt" in message
    assert "NOAH" in message and "\n" not in message
    assert "VTAB root" in message


def test_missing_task_folder_lists_present_tasks(toy_root):
    with pytest.raises(UserError) as error:
        make_dm(toy_root, task="dtd", num_classes=47).setup("fit")
    message = str(error.value)
    assert str(toy_root / "vtab-1k" / "dtd") in message and "present" in message
    assert "toy" in message


def small_task(tmp_path) -> Path:
    return write_vtab_task(tmp_path, "toy", CLASSES, n_train=8, n_val=4, n_test=4, img_size=8)


def test_missing_list_file(tmp_path):
    task_dir = small_task(tmp_path)
    (task_dir / "train800val200.txt").unlink()
    with pytest.raises(UserError) as error:
        make_dm(tmp_path, protocol="final").setup("fit")
    message = str(error.value)
    assert str(task_dir / "train800val200.txt") in message and "val200.txt" in message


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("images/train800/000002.jpg", "malformed line 'images/train800/000002.jpg'"),
        ("images/train800/000002.jpg two", "label 'two' is not an integer"),
        ("images/train800/000002.jpg 4", "label 4 is outside [0, 4)"),
        ("images/train800/000002.jpg -1", "label -1 is outside [0, 4)"),
    ],
)
def test_bad_list_line_names_file_and_line(tmp_path, bad_line, expected):
    task_dir = small_task(tmp_path)
    list_file = task_dir / "train800.txt"
    lines = list_file.read_text().splitlines()
    lines[2] = bad_line
    list_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as error:
        make_dm(tmp_path, protocol="tune").setup("fit")
    message = str(error.value)
    assert f"{list_file}:3:" in message and expected in message
    assert "<relative/image/path> <integer label>" in message or "num_classes" in message


def test_blank_lines_are_skipped_and_paths_resolved(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text("\n a/b c.jpg 1 \n\nx.png 0\n")
    assert read_list_file(list_file, 2) == [(tmp_path / "a/b c.jpg", 1), (tmp_path / "x.png", 0)]
    assert read_list_file(list_file, 2, base_dir="/data")[1] == (Path("/data/x.png"), 0)
    list_file.write_text("\n\n")
    with pytest.raises(UserError, match="has no samples"):
        read_list_file(list_file, 2)


def test_missing_image(tmp_path):
    task_dir = small_task(tmp_path)
    image = task_dir / "images/val200/000001.jpg"
    image.unlink()
    with pytest.raises(UserError) as error:
        make_dm(tmp_path, protocol="tune").setup("fit")
    assert f"image {image} not found" in str(error.value)


def test_missing_image_detected_at_setup_when_lazy(tmp_path):
    task_dir = small_task(tmp_path)
    image = task_dir / "images/train800/000005.jpg"
    image.unlink()
    with pytest.raises(UserError, match="not found"):
        make_dm(tmp_path, protocol="tune", cache_limit_gb=0.0).setup("fit")


def test_corrupt_image(tmp_path):
    task_dir = small_task(tmp_path)
    image = task_dir / "images/train800/000004.jpg"
    image.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(UserError) as error:
        make_dm(tmp_path, protocol="tune").setup("fit")
    message = str(error.value)
    assert message.startswith(f"cannot decode image {image}: ") and "\n" not in message


def test_truncated_image(tmp_path):
    task_dir = small_task(tmp_path)
    image = task_dir / "images/train800/000004.jpg"
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(UserError, match="cannot decode image"):
        decode_image(image, 8)


def test_decode_image_converts_to_rgb(tmp_path):
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.new("L", (10, 6), color=77).save(path)
    pixels = decode_image(path, 5)
    assert pixels.shape == (3, 5, 5) and pixels.dtype == torch.uint8
    assert (pixels == 77).all()
