"""cpu_threads: explicit values are taken as given; auto stays within what the process may use."""

import os

import pytest

from src.errors import UserError
from src.threads import allowed_cpus, choose_threads


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
