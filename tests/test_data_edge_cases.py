"""Input files as users really have them: BOM, CRLF, other encodings, damaged caches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from src.cli.entry import user_message
from src.data.images import CachedImageDataset, build_dataset
from src.data.lists import read_json_split, read_list_file
from src.errors import UserError


@pytest.fixture
def images(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    "text",
    ["\ufeffa.png 0\nb.png 1\n", "a.png 0\r\nb.png 1\r\n", "\ufeffa.png 0\r\nb.png 1"],
    ids=["bom", "crlf", "bom+crlf"],
)
def test_bom_and_crlf_list_files_are_valid(images, text):
    path = images / "train.txt"
    path.write_bytes(text.encode("utf-8"))
    samples = read_list_file(path, num_classes=2)
    assert samples == [(images / "a.png", 0), (images / "b.png", 1)]
    assert all(p.is_file() for p, _ in samples)  # the BOM is not part of the first path


def test_list_file_that_is_not_utf8_names_the_line_and_the_fix(images):
    path = images / "train.txt"
    path.write_bytes("a.png 0\nb\xe9.png 1\n".encode("latin-1"))
    with pytest.raises(UserError) as refused:
        read_list_file(path, num_classes=2)
    assert str(refused.value) == (
        f"{path}:2: not UTF-8 text (byte 0xe9); save the file as UTF-8 "
        "(e.g. iconv -f latin1 -t utf-8)"
    )


def test_json_split_with_a_bom_is_valid(tmp_path):
    path = tmp_path / "train.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"x/a.jpg": 3}).encode())
    assert read_json_split(path, "layout") == [("x/a.jpg", 3)]


def disk_cached(images, tmp_path) -> CachedImageDataset:
    samples = [(images / "a.png", 0), (images / "b.png", 1)]
    return build_dataset(samples, 8, cache_dir=tmp_path / "cache", budget=_no_memory())


def _no_memory():
    from src.data.images import CacheBudget

    return CacheBudget(0)


def test_damaged_cache_in_a_dataloader_worker_is_the_same_one_line(images, tmp_path):
    dataset = disk_cached(images, tmp_path)
    assert dataset.on_disk
    cache = dataset.pixels
    np.save(cache, np.zeros((1, 3, 8, 8), dtype=np.uint8))  # another process shrank it
    loader = DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(UserError) as in_worker:
        next(iter(loader))
    assert "DataLoader worker" in str(in_worker.value)  # torch's wrapper around the original
    expected = (
        f"decoded-image cache {cache} is unreadable (holds (1, 3, 8, 8) uint8, not 2 images); "
        "delete it and run again (the images are decoded anew)"
    )
    assert user_message(in_worker.value) == expected
    with pytest.raises(UserError, match="is unreadable"):  # the main process says the same
        CachedImageDataset(cache, torch.tensor([0, 1])).uint8(0)


def test_truncated_cache_file_is_decoded_again(images, tmp_path):
    cache = disk_cached(images, tmp_path).pixels
    good = cache.read_bytes()
    cache.write_bytes(good[:100])
    again = disk_cached(images, tmp_path)
    assert again.pixels == cache and cache.read_bytes() == good
