"""cpu_threads: explicit values are taken as given; auto stays within what the process may use."""

import os

import pytest

from src.errors import UserError
from src.run.threads import allowed_cpus, choose_threads


def test_a_number_is_taken_as_given():
    assert choose_threads(3) == 3 and choose_threads("2") == 2


@pytest.mark.parametrize("bad", [0, -1])
def test_fewer_than_one_thread_is_a_user_error(bad):
    with pytest.raises(UserError, match="cpu_threads"):
        choose_threads(bad)


def test_auto_stays_within_the_allowed_cpus_and_splits_among_processes():
    assert 1 <= choose_threads("auto") <= allowed_cpus()
    assert choose_threads("auto", processes=10_000) == 1


def test_slurm_allocation_bounds_the_choice(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert allowed_cpus() == 1 and choose_threads("auto") == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(os.cpu_count() or 1))
    assert allowed_cpus() == (os.cpu_count() or 1)


def test_deterministic_auto_ignores_the_load(monkeypatch):
    import src.run.threads

    monkeypatch.setattr(src.run.threads, "busy_cpus", lambda: float(os.cpu_count() or 1))
    assert choose_threads("auto") == 1  # every CPU busy: auto alone takes one
    assert choose_threads("auto", deterministic=True) == allowed_cpus()
    assert choose_threads("auto", processes=2, deterministic=True) == max(1, allowed_cpus() // 2)


def test_a_resume_keeps_the_thread_count_its_checkpoint_recorded(tmp_path, monkeypatch):
    import torch

    import src.run.threads
    from src.run.threads import CHECKPOINT_KEY, threads_for_run

    monkeypatch.setattr(
        src.run.threads, "busy_cpus", lambda: 0.0
    )  # an idle machine: auto would differ
    ckpt = tmp_path / "last.ckpt"
    torch.save({CHECKPOINT_KEY: 7}, ckpt)
    assert threads_for_run("auto", resume_from=ckpt) == (7, None)
    assert threads_for_run("auto", deterministic=True, resume_from=ckpt) == (7, None)
    threads, warning = threads_for_run(2, resume_from=ckpt)  # a number is obeyed, loudly
    assert threads == 2 and "trained with 7" in warning and "not be bit-identical" in warning
    assert threads_for_run(7, resume_from=ckpt) == (7, None)
    torch.save({}, ckpt)  # written before the count was recorded: choose as for a new run
    assert threads_for_run(3, resume_from=ckpt) == (3, None)
