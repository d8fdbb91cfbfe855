"""Fashion-MNIST -> VTAB-1k task folder, on tiny IDX files written by the test itself."""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.errors import UserError
from tests.test_cli import error_line
from tools.demo_assets.fashion_mnist import LIST_FILES, main, prepare, read_idx

ROOT = Path(__file__).resolve().parents[2]
N_TRAIN_SRC, N_TEST_SRC = 60, 30  # 6 and 3 images per class
SIZES = dict(n_train=30, n_val=10, n_test=20)  # 3/1 per class from train, 2 per class test


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_source(folder: Path, seed: int = 123) -> dict:
    rng = np.random.default_rng(seed)
    data = {}
    for split, n, stem in (("train", N_TRAIN_SRC, "train"), ("test", N_TEST_SRC, "t10k")):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(images, 2051))
        )
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(labels, 2049))
        )
        data[split] = (images, labels)
    return data


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "fmnist"
    folder.mkdir()
    return folder, _write_source(folder)


def _read_list(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().splitlines()
    return [(p, int(lab)) for p, lab in (line.split(" ") for line in lines)]


def test_layout_counts_labels_and_pixels(source, tmp_path):
    folder, data = source
    out = tmp_path / "vtab-1k" / "fashion_mnist"
    summary = prepare(folder, out, seed=0, **SIZES)
    assert not summary["skipped"]
    lists = {name: _read_list(out / name) for name in LIST_FILES}
    assert len(lists["train800.txt"]) == 30
    assert len(lists["val200.txt"]) == 10
    assert len(lists["test.txt"]) == 20
    train, val = set(lists["train800.txt"]), set(lists["val200.txt"])
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert lists["train800val200.txt"] == lists["train800.txt"] + lists["val200.txt"]
    for name, split_counts in (("train800.txt", 3), ("val200.txt", 1), ("test.txt", 2)):
        labels = [lab for _, lab in lists[name]]
        assert np.bincount(labels, minlength=10).tolist() == [split_counts] * 10
    for name, entries in lists.items():
        split = "test" if name == "test.txt" else "train"
        images, labels = data[split]
        for rel, lab in entries:
            assert rel.startswith(f"images/{split}/") and rel.endswith(".png")
            i = int(Path(rel).stem)
            assert lab == labels[i]
            with Image.open(out / rel) as im:
                assert im.size == (28, 28)
                np.testing.assert_array_equal(np.asarray(im), images[i])
    # no temp siblings left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["fashion_mnist"]


def test_all_test_images_with_n_test_zero(source, tmp_path):
    folder, _ = source
    prepare(folder, tmp_path / "t", seed=0, n_train=30, n_val=10, n_test=0)
    assert len(_read_list(tmp_path / "t" / "test.txt")) == N_TEST_SRC


def test_deterministic_and_seed_dependent(source, tmp_path):
    folder, _ = source
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare(folder, tmp_path / name, seed=seed, **SIZES)
    read = {n: [(tmp_path / n / f).read_text() for f in LIST_FILES] for n in "abc"}
    assert read["a"] == read["b"]
    assert read["a"] != read["c"]


def test_skip_if_complete_and_rebuild_when_incomplete(source, tmp_path):
    folder, _ = source
    out = tmp_path / "t"
    prepare(folder, out, seed=0, **SIZES)
    marker = out / "images" / "train" / "marker"
    marker.write_text("x")
    assert prepare(folder, out, seed=0, **SIZES)["skipped"]
    assert marker.exists()  # untouched
    with pytest.raises(UserError, match="--force"):  # same folder, other settings
        prepare(folder, out, seed=1, **SIZES)
    # remove one listed image: the folder is incomplete and gets rebuilt
    first = _read_list(out / "test.txt")[0][0]
    (out / first).unlink()
    assert not prepare(folder, out, seed=0, **SIZES)["skipped"]
    assert (out / first).is_file() and not marker.exists()
    assert not prepare(folder, out, seed=0, force=True, **SIZES)["skipped"]


def test_missing_source(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        prepare(tmp_path / "nope", tmp_path / "out", **SIZES)
    assert not (tmp_path / "out").exists()


def test_bad_magic_names_file(source, tmp_path):
    folder, data = source
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(_idx_bytes(data["test"][1], 2051)))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz.*magic"):
        prepare(folder, tmp_path / "out", **SIZES)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out*")) == []


def test_read_idx_raw_and_truncated(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "x-idx3-ubyte"
    raw.write_bytes(_idx_bytes(arr, 2051))
    np.testing.assert_array_equal(read_idx(raw, 2051), arr)
    raw.write_bytes(_idx_bytes(arr, 2051)[:-1])
    with pytest.raises(UserError, match="truncated"):
        read_idx(raw, 2051)


def test_cli(source, tmp_path, capsys):
    folder, _ = source
    out = tmp_path / "cli"
    args = [
        "--source",
        str(folder),
        "--out",
        str(out),
        "--n-train",
        "30",
        "--n-val",
        "10",
        "--n-test",
        "20",
    ]
    # One real `python -m` run from the checkout, as a user types it; the rest in-process.
    first = subprocess.run(
        [sys.executable, "-m", "tools.demo_assets.fashion_mnist", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout and len(first.stdout.strip().splitlines()) == 1
    main(args)
    assert "already complete" in capsys.readouterr().out
    missing = ["--source", str(tmp_path / "nope"), "--out", str(tmp_path / "cli2")]
    assert "not found" in error_line(capsys, main, missing)
