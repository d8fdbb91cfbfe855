"""What a config key means: one role per key, read by everything that compares run configs.

- RESULT: decides what the run computes (σ, the adapter, epochs, precision, the protocol). A
  resume must keep it, a report row and a search's setting are keyed on it, the loggers get it.
- REPLICATE: which replicate of a setting the run is (the seed, the few-shot draw). It decides
  the bits, so a resume must keep it and the loggers get it, but a report row and a search's
  setting average over it.
- SEARCH: how a search is run (``hparams_search``, the metric a sweeper maximises), not the
  setting it tries. A resume may change it; rows, settings and loggers leave it out.
- PLUMBING: where files are, how fast the run goes and what it shows (paths, loggers, workers,
  threads, the accelerator, diagnostics). A resume may change it; rows, settings and loggers
  leave it out.

Readers: ``src.runs`` (a report row), ``src.run.folder`` (what a resume may change),
``src.run.loggers`` (the hyper-parameters every logger gets), ``src.select`` (a search's setting
and the final command). Keys are dotted config keys (``data.num_workers``) or override keys
(``hparams_search``, ``hydra/launcher``: a group's option is the node of the same name).

:data:`ROLES` names keys; an entry covers its key and everything below it, ``*`` ends a prefix
(``trainer.enable_*``), and the most specific entry wins. A key no entry names decides the
result: the safe reading of a key added later is that a resume must keep it and a report must
not average over it. ``tests/test_run_keys.py`` checks that every key of every composed config
is named here and that every entry names one.
"""

from __future__ import annotations

from enum import Enum


class KeyRole(Enum):
    RESULT = "result"
    REPLICATE = "replicate"
    SEARCH = "search"
    PLUMBING = "plumbing"

    @property
    def kept_on_resume(self) -> bool:
        """A resume with another value is refused (src.run.folder)."""
        return self in (KeyRole.RESULT, KeyRole.REPLICATE)

    @property
    def names_the_setting(self) -> bool:
        """Runs that differ in it are different settings: separate report rows, separate
        candidates of a search. Runs that differ only in other keys are averaged together."""
        return self is KeyRole.RESULT

    @property
    def logged(self) -> bool:
        """A hyper-parameter every logger gets (W&B config, TensorBoard hparams)."""
        return self in (KeyRole.RESULT, KeyRole.REPLICATE)


RESULT, REPLICATE, SEARCH, PLUMBING = KeyRole

ROLES: dict[str, KeyRole] = {
    # ------------------------------------------------------------------------ what is computed
    "sigma": RESULT,  # PACE's σ and λ (pace.sigma, pace.lam copy them)
    "lam": RESULT,
    "paper_rank": RESULT,  # a paper task's adapter rank (adapter.rank reads it)
    "data": RESULT,  # task, protocol (tune and final runs are never merged), batch, size, shots
    "backbone": RESULT,
    "adapter": RESULT,
    "pace": RESULT,
    "optim": RESULT,
    "recipe": RESULT,  # the training behaviour's switches (conf/recipe/)
    "trainer": RESULT,  # epochs, precision, batch limits, strategy
    # data.batch_size is per process: N devices train with N times the batch and 1/N the steps.
    "trainer.devices": RESULT,
    # Group choices typed as overrides (experiment=vtab_pace, task=vtab_cifar, debug=tiny): they
    # set keys of the groups above, so they decide the result too.
    "experiment": RESULT,
    "task": RESULT,
    "debug": RESULT,
    # -------------------------------------------------------- which replicate of the setting
    "seed": REPLICATE,
    "data.split_seed": REPLICATE,  # the few-shot draw, GLUE's held-out tenth under tune
    # Deterministic algorithms and a pinned thread count: the same setting, other bits.
    "deterministic": REPLICATE,
    "trainer.deterministic": REPLICATE,  # copies deterministic
    # ------------------------------------------------------------------- how a search is run
    "hparams_search": SEARCH,
    "optimized_metric": SEARCH,
    # ----------------------------------------------- where files are, speed, what is shown
    "paths": PLUMBING,
    "hydra": PLUMBING,  # run and sweep folders, the launcher, the sweeper
    "slurm": PLUMBING,  # the cluster's partition, account, limits (conf/local/)
    "logger": PLUMBING,
    # The project's callbacks checkpoint, show and record; none changes training (a callback
    # that stops a run early leaves it short of trainer.max_epochs, which a report skips).
    "callbacks": PLUMBING,
    "extras": PLUMBING,  # what is printed at start, tags enforcement
    "tags": PLUMBING,
    "task_name": PLUMBING,  # names the log folder
    "paper_setup": PLUMBING,  # a label: the departures it finds are keys of their own
    "ckpt_path": PLUMBING,
    "overwrite": PLUMBING,
    "train": PLUMBING,
    "test": PLUMBING,
    # A resume reuses the thread count its checkpoint recorded, whatever this says.
    "cpu_threads": PLUMBING,
    # Measurements beside training (‖∇CE‖ from the step's own graph, the FP distance in eval
    # mode): they do not change what is trained.
    "diagnostics": PLUMBING,
    "recipe.grad_norm_every": PLUMBING,  # diagnostics.grad_norm_every copies it
    "data.root": PLUMBING,
    "data.num_workers": PLUMBING,
    "data.cache_*": PLUMBING,  # where decoded images / tokens are kept, and the memory for them
    "data.pin_memory": PLUMBING,
    "data.decode_threads": PLUMBING,
    "trainer.accelerator": PLUMBING,  # CPU or GPU: other bits; trainer.precision is a result
    "trainer.default_root_dir": PLUMBING,
    "trainer.log_every_n_steps": PLUMBING,
    "trainer.enable_*": PLUMBING,  # model summary, progress bar, checkpointing
    # A copy of data.img_size, which carries the meaning (a ViT refuses images of another size).
    "backbone.img_size": PLUMBING,
}


def _matches(pattern: str, key: str) -> bool:
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern or key.startswith(pattern + ".")


def matching_entry(key: str) -> str | None:
    """The :data:`ROLES` entry that decides ``key`` (the most specific that covers it), or None."""
    key = key.replace("/", ".")
    found = [pattern for pattern in ROLES if _matches(pattern, key)]
    return max(found, key=lambda p: len(p.rstrip("*")), default=None)


def key_role(key: str) -> KeyRole:
    """The role of a dotted config key or an override key; RESULT when no entry names it."""
    entry = matching_entry(key)
    return RESULT if entry is None else ROLES[entry]
