"""FGVC, few-shot and domain-shift datamodules on fixtures in each benchmark's real layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from src.data.domain import DomainDataModule
from src.data.fewshot import FEWSHOT_TASKS, FewShotDataModule
from src.data.fgvc import FGVC_TASKS, FGVCDataModule
from src.data.images import decode_image
from src.data.synthetic import write_domain_sets, write_fewshot_task, write_fgvc_task
from src.data.transforms import CentreCrop, RandomCropFlip, normalise
from src.errors import UserError

SIZE = 16  # model input; cached at round(16 * 256 / 224) = 18


def loader_items(loader):
    images, labels, indices = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels), torch.cat(indices)


# ------------------------------------------------------------------------------- few-shot
@pytest.fixture(scope="module")
def fewshot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    write_fewshot_task(root, "toy", num_classes=4, shots=(1, 2), split_seeds=(0, 1))
    return root


def fewshot(root, **kwargs):
    kwargs = {"num_classes": 4, "img_size": SIZE, "batch_size": 4, "num_workers": 0, **kwargs}
    return FewShotDataModule(root=str(root), task=kwargs.pop("task", "toy"), **kwargs)


def test_fewshot_tables():
    assert FEWSHOT_TASKS == {
        "fgvc-aircraft": 100,
        "food101": 101,
        "oxford-flowers102": 102,
        "oxford-pets": 37,
        "stanford-cars": 196,
    }
    assert FGVC_TASKS == {
        "cub": 200,
        "nabirds": 555,
        "oxford_flowers": 102,
        "stanford_dogs": 120,
        "stanford_cars": 196,
    }


@pytest.mark.parametrize("shots, split_seed", [(1, 0), (2, 0), (2, 1)])
def test_fewshot_reads_the_list_of_its_shots_and_seed(fewshot_root, shots, split_seed):
    dm = fewshot(fewshot_root, shots=shots, split_seed=split_seed)
    assert dm.train_size == 4 * shots
    lines = (
        (
            fewshot_root
            / f"few-shot/toy/annotations/train_meta.list.num_shot_{shots}.seed_{split_seed}"
        )
        .read_text()
        .split("\n")
    )
    expected = [fewshot_root / "few-shot/toy/images" / line.split()[0] for line in lines if line]
    assert [path for path, _ in dm.samples(dm.splits()["train"])] == expected
    assert sorted(label for _, label in dm.samples(dm.splits()["train"])) == sorted(
        list(range(4)) * shots
    )


def test_fewshot_protocols_and_views(fewshot_root):
    tune = fewshot(fewshot_root, protocol="tune", shots=2)
    final = fewshot(fewshot_root, shots=2, split_seed=1)
    assert tune.splits()["val"] == "val_meta.list" and final.splits()["val"] == "test_meta.list"
    assert len(tune.dataset("val")) == 8 and len(final.dataset("test")) == 12
    # Cached at 18 px (shorter side, centre square); the model sees 16 px crops.
    train = final.dataset("train")
    assert train.uint8(0).shape == (3, 18, 18)
    assert train[0][0].shape == (3, SIZE, SIZE)
    test = final.dataset("test")
    raw = decode_image(fewshot_root / "few-shot/toy/images/test/00000.jpg", 18, "shorter_side")
    assert torch.equal(test.uint8(0), raw)
    assert torch.allclose(test[0][0], normalise(raw[:, 1:17, 1:17]))
    # Training views differ between epochs (random crops), evaluation views never do.
    torch.manual_seed(0)
    first = [train[i][0] for i in range(len(train))]
    second = [train[i][0] for i in range(len(train))]
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(test[3][0], test[3][0])
    assert final.describe().startswith("2-shot (split seed 1) fewshot/toy (4 classes)")


def test_crop_views():
    image = torch.arange(3 * 6 * 6, dtype=torch.uint8).view(3, 6, 6)
    assert torch.equal(CentreCrop(4)(image), image[:, 1:5, 1:5])
    torch.manual_seed(1)
    seen = set()
    for _ in range(200):
        crop = RandomCropFlip(4)(image)
        assert crop.shape == (3, 4, 4)
        found = [
            (top, left, flip)
            for top in range(3)
            for left in range(3)
            for flip in (False, True)
            if torch.equal(
                crop,
                image[:, top : top + 4, left : left + 4].flip(-1)
                if flip
                else image[:, top : top + 4, left : left + 4],
            )
        ]
        assert len(found) == 1
        seen.add(found[0])
    assert len(seen) == 18  # every window, both ways


def test_fewshot_missing_shots_lists_what_exists(fewshot_root):
    with pytest.raises(UserError) as error:
        _ = fewshot(fewshot_root, shots=16).train_size
    message = str(error.value)
    assert "num_shot_16.seed_0 not found" in message
    assert "train_meta.list.num_shot_1.seed_0" in message and "data.shots" in message


@pytest.mark.parametrize("key, value", [("shots", 0), ("split_seed", -1), ("shots", "4")])
def test_fewshot_bad_shots_or_seed(fewshot_root, key, value):
    with pytest.raises(UserError, match=f"data.{key} must be an integer"):
        fewshot(fewshot_root, **{key: value})


def test_fewshot_train_list_must_cover_every_class(tmp_path):
    task_dir = write_fewshot_task(tmp_path, "toy", num_classes=4, shots=(1,), split_seeds=(0,))
    listed = task_dir / "annotations/train_meta.list.num_shot_1.seed_0"
    listed.write_text("\n".join(listed.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(UserError, match="has samples of 3 of the 4 classes"):
        _ = fewshot(tmp_path, shots=1).train_size


def test_fewshot_known_task_and_folder_alias(tmp_path):
    write_fewshot_task(
        tmp_path,
        "stanford_cars",
        num_classes=196,
        shots=(1,),
        split_seeds=(0,),
        n_val=2,
        n_test=2,
        img_size=8,
    )
    # NOAH's Stanford Cars lists are relative to the dataset folder, not images/.
    annotations = tmp_path / "few-shot/stanford_cars/annotations"
    for path in annotations.iterdir():
        path.write_text("".join(f"images/{line}\n" for line in path.read_text().splitlines()))
    dm = FewShotDataModule(str(tmp_path), "stanford-cars", shots=1, img_size=8, num_workers=0)
    assert dm.num_classes == 196 and dm.train_size == 196
    assert dm.samples("test_meta.list")[0][0].is_file()


# ------------------------------------------------------------------------------------ FGVC
@pytest.fixture(scope="module")
def fgvc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fgvc")
    write_fgvc_task(root, "toy", num_classes=4, counts=(12, 4, 8), first_id=101)
    return root


class ToyFGVC(FGVCDataModule):
    tasks = {**FGVC_TASKS, "toy": 4}  # the fixture plays a 4-class FGVC dataset


def fgvc(root, task="toy", **kwargs):
    kwargs = {"img_size": SIZE, "batch_size": 4, "num_workers": 0, **kwargs}
    return ToyFGVC(root=str(root), task=task, **kwargs)


def test_fgvc_protocols_and_vpt_label_mapping(fgvc_root):
    tune, final = fgvc(fgvc_root, protocol="tune"), fgvc(fgvc_root)
    assert tune.train_size == 12 and final.train_size == 16
    assert len(tune.dataset("val")) == 4 and len(final.dataset("test")) == 8
    assert tune.label_of == {101: 0, 102: 1, 103: 2, 104: 3}
    table = json.loads((fgvc_root / "fgvc/toy/test.json").read_text())
    _, labels, indices = loader_items(final.test_dataloader())
    assert labels.tolist() == [v - 101 for v in table.values()]
    assert indices.tolist() == list(range(8))
    first = final.samples("test")[0][0]
    assert first == fgvc_root / "fgvc/toy/images" / next(iter(table))


def test_fgvc_image_folder_found_for_each_vpt_layout(tmp_path):
    write_fgvc_task(
        tmp_path,
        "stanford_dogs",
        num_classes=120,
        counts=(120, 2, 2),
        image_folder="Images",
        img_size=8,
    )
    dm = FGVCDataModule(str(tmp_path), "stanford_dogs", img_size=8, num_workers=0)
    assert dm.samples("test")[0][0].parent.parent == tmp_path / "fgvc/stanford_dogs/Images"
    write_fgvc_task(
        tmp_path / "b",
        "Stanford-cars",
        num_classes=196,
        counts=(196, 2, 2),
        image_folder=".",
        img_size=8,
    )
    dm = FGVCDataModule(str(tmp_path / "b" / "fgvc"), "stanford_cars", img_size=8)
    assert dm.task_dir.name == "Stanford-cars" and dm.samples("val")[0][0].is_file()


def test_fgvc_errors(tmp_path):
    task_dir = write_fgvc_task(tmp_path, "toy", num_classes=4, counts=(8, 4, 4), img_size=8)
    with pytest.raises(UserError, match="unknown FGVC task 'birds'.*cub, nabirds"):
        fgvc(tmp_path, task="birds")
    (task_dir / "val.json").write_text('{"a.jpg": 99}')
    with pytest.raises(UserError, match="label 99 of 'a.jpg' does not occur in train.json"):
        fgvc(tmp_path, protocol="tune").samples("val")
    (task_dir / "val.json").write_text('{"a.jpg": "x"}')
    with pytest.raises(UserError, match="is not an integer"):
        fgvc(tmp_path, protocol="tune").samples("val")
    (task_dir / "val.json").write_text("[1, 2")
    with pytest.raises(UserError, match="is not valid JSON"):
        fgvc(tmp_path, protocol="tune").samples("val")
    train = json.loads((task_dir / "train.json").read_text())
    (task_dir / "train.json").write_text(json.dumps(dict(list(train.items())[:3])))
    with pytest.raises(UserError, match="has 3 distinct labels but FGVC 'toy' has 4 classes"):
        _ = fgvc(tmp_path).train_size
    (task_dir / "test.json").unlink()
    with pytest.raises(UserError, match="test.json not found; expected <root>/fgvc/<dataset>"):
        fgvc(tmp_path).samples("test")


# ---------------------------------------------------------------------------------- domain
@pytest.fixture(scope="module")
def domain_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("domain")
    write_domain_sets(root, "toynet", num_classes=6, shots=2, n_test=6, subset=(1, 3, 5))
    return root


def domain(root, **kwargs):
    kwargs = {"num_classes": 6, "shots": 2, "img_size": SIZE, "num_workers": 0, **kwargs}
    return DomainDataModule(root=str(root), task="toynet", batch_size=4, **kwargs)


def test_domain_has_five_test_sets_and_class_subsets(domain_root):
    dm = domain(domain_root)
    assert dm.test_set_names == ["imagenet", "v2", "sketch", "a", "r"]
    assert dm.class_subsets == {"a": [1, 3, 5], "r": [1, 3, 5]}
    assert dm.train_size == 12
    loaders = dm.test_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 5
    assert [len(loader.dataset) for loader in loaders] == [6] * 5
    assert dm.samples(dm.test_sets()["sketch"])[0][0] == (
        domain_root / "domain-adaptation/imagenet-sketch/x/00000.jpg"
    )
    assert dm.samples(dm.splits()["train"])[0][0] == (
        domain_root / "domain-adaptation/toynet/images/train/n00000/0_0.jpg"
    )
    assert "restricted to their 200 classes" in dm.describe()


def test_domain_errors(domain_root, tmp_path):
    with pytest.raises(UserError, match="unknown domain-shift protocol 'tune'; valid: final"):
        domain(domain_root, protocol="tune")
    shutil.copytree(domain_root, tmp_path / "copy")
    (tmp_path / "copy/domain-adaptation/imagenet-r/annotations/val_meta.list").unlink()
    with pytest.raises(UserError, match="imagenet-r/annotations/val_meta.list not found"):
        domain(tmp_path / "copy").setup("test")


# ------------------------------------------------------------ several test sets, one run


def test_domain_run_logs_five_test_metrics_with_restricted_logits(domain_root, compose_cfg):
    from src.train import train

    cfg = compose_cfg(
        "experiment=domain_pace",
        "debug=tiny",
        f"data.root={domain_root}",
        "data.task=toynet",
        "data.num_classes=6",
        "data.shots=2",
        "data.img_size=16",
        # 12 training images; recipe=paper drops the last partial batch, so the batch must fit.
        "data.batch_size=4",
        "+backbone.kwargs.depth=2",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
    )
    metrics = train(cfg)
    names = ["imagenet", "v2", "sketch", "a", "r"]
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    for source in (metrics, results["metrics"]):
        assert {f"test/acc/{n}" for n in names} <= set(source)
        assert "test/acc" not in source

    # The same numbers by hand: A and R are scored with logits outside their classes masked.
    # The frozen backbone is the seeded random init; rebuild it, then load the trained part.
    import lightning as L

    from src.network import load_trainable
    from src.train import build_finetuner

    L.seed_everything(cfg.seed)
    model = build_finetuner(cfg, 6).model
    load_trainable(model, Path(cfg.paths.output_dir) / "adapter.safetensors")
    model.eval()
    dm = domain(domain_root)
    for name, dataset in dm.test_datasets().items():
        images, labels, _ = loader_items(torch.utils.data.DataLoader(dataset, batch_size=6))
        with torch.no_grad():
            logits = model(images)
        if name in ("a", "r"):
            allowed = torch.zeros(6, dtype=torch.bool)
            allowed[[1, 3, 5]] = True
            logits = logits.masked_fill(~allowed, float("-inf"))
            assert set(logits.argmax(1).tolist()) <= {1, 3, 5}
        expected = (logits.argmax(1) == labels).float().mean().item()
        assert metrics[f"test/acc/{name}"] == pytest.approx(expected, abs=1e-6), name
