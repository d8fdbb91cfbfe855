"""The training loader's order: drawn as DataLoader(shuffle=True) draws it, and continued by a
run resumed part-way through an epoch (the datamodule's checkpoint state)."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from src.data.base import EpochShuffle
from src.data.synthetic import write_vtab_task
from src.data.vtab import VTABDataModule


def test_the_order_is_the_one_dataloader_shuffle_drew():
    torch.manual_seed(3)
    before = [i for batch in DataLoader(range(50), batch_size=8, shuffle=True) for i in batch]
    torch.manual_seed(3)
    ours = [
        i for batch in DataLoader(range(50), batch_size=8, sampler=EpochShuffle(50)) for i in batch
    ]
    assert [int(i) for i in ours] == [int(i) for i in before]


def test_a_resume_continues_the_epoch_then_draws_anew():
    sampler = EpochShuffle(20)
    first = list(sampler)
    sampler.resume(sampler.seed, 12)
    assert list(sampler) == first[12:]  # the rest of the same epoch
    assert len(sampler) == 20  # Lightning counts the batches already done itself
    assert list(sampler) != first  # the next epoch: a new order


def test_the_datamodule_state_carries_the_order_to_the_next_loader(tmp_path, caplog):
    write_vtab_task(tmp_path, "toy", num_classes=4, n_train=40, n_val=8, n_test=8, img_size=32)
    options = dict(root=tmp_path, task="toy", num_classes=4, batch_size=8, num_workers=0,
                   img_size=32)  # fmt: skip
    stopped = VTABDataModule(**options)
    loader = stopped.train_dataloader()
    order = [int(i) for _, _, index in loader for i in index]
    loader.batches_done = lambda: 2  # two batches trained when the checkpoint was saved
    state = stopped.state_dict()
    assert state == {"train_order": {"seed": loader.sampler.seed, "samples_done": 16}}

    resumed = VTABDataModule(**options, crop=True)
    resumed.load_state_dict(state)
    with caplog.at_level(logging.WARNING):
        rest = [int(i) for _, _, index in resumed.train_dataloader() for i in index]
    assert rest == order[16:]
    assert "random crops differ" in caplog.text  # crop=true: said, not silent
    again = [int(i) for _, _, index in resumed.train_dataloader() for i in index]
    assert sorted(again) == sorted(order)  # used once: the next epoch is whole
