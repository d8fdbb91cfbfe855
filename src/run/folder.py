"""A run folder: the one writer of its files, and the rules for what a launch may do to it.

:class:`RunFolder` owns the folder. It writes the run's own files (the resolved config, Hydra's
record of each launch, the adapter weights, results.json with its provenance, the record of a
divergence) and names every file: :data:`RUN_FILES` is the one table of the folder's entries,
which the Lightning components that must write during training (checkpoints, summary.csv, the
loggers) take their paths from too (``${run_file:<role>}`` in conf/), and which
``overwrite=true`` clears.

A launch first *checks* (:func:`prepare_run_folder`: nothing is written) and only then *begins*
(:meth:`RunFolder.begin`: the first writes). The checks guarantee that no command damages a run
that is already in the folder (docs/run_folders.md):

- a folder holding a finished (or diverged) run is refused unless ``overwrite=true``;
- a folder holding an unfinished run is continued only with ``ckpt_path=last`` and the same
  config (a conflicting one is refused with a one-line diff); its config.yaml is kept as it is;
- ``ckpt_path=last`` with a missing, dangling or corrupt ``last.ckpt`` resumes from the newest
  readable checkpoint and says so, or stops with one line;
- the folder must be writable.

No torch here: checkpoints are zip archives, checked with :mod:`zipfile`; what needs torch
(the weights, the provenance) is imported when a run writes it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.cli.entry import is_rank_zero, say, write_json
from src.errors import UserError
from src.run.keys import key_role


@dataclass(frozen=True)
class RunFile:
    """One entry of a run folder: its name, what it holds, who writes it and when."""

    name: str  # relative to the run folder; a glob pattern where Lightning numbers the files
    holds: str
    # The config entry whose callback or logger writes it (its path names the entry with
    # `${run_file:<role>}`); None: RunFolder writes it, or (when="never") another program.
    component: str | None = None
    # Which finished runs have it: "always", "training" (train=true), "hydra" (launched under
    # Hydra, which keeps a record), "never" (written by another program, or removed again).
    when: str = "always"

    def in_finished_run(self, cfg: DictConfig) -> bool:
        """Does a finished run with the settings ``cfg`` leave this entry in its folder?"""
        if self.when == "never" or (self.when == "training" and not cfg.get("train", True)):
            return False
        if self.when == "hydra":
            from hydra.core.hydra_config import HydraConfig

            return HydraConfig.initialized()
        if self.component is None:
            return True
        node = OmegaConf.select(cfg, self.component)
        return OmegaConf.is_dict(node) and "_target_" in node


# Every entry a run folder can hold, by role. `overwrite=true` removes them all before the new
# run starts; anything else in the folder (notes, train.log) is left alone.
RUN_FILES = {
    "config": RunFile("config.yaml", "the resolved config, written once"),
    "launches": RunFile(".hydra", "Hydra's record of each launch", when="hydra"),
    "checkpoints": RunFile(
        "checkpoints", "epoch checkpoints, last.ckpt", "callbacks.model_checkpoint", "training"
    ),
    "summary": RunFile("summary.csv", "one row per epoch", "callbacks.epoch_summary", "training"),
    "csv": RunFile("csv", "csv/metrics.csv: every logged metric", "logger.csv"),
    "tensorboard": RunFile("tensorboard", "TensorBoard's event files", "logger.tensorboard"),
    # WandbLogger names its folder itself: <save_dir>/wandb.
    "wandb": RunFile("wandb", "W&B's run files", "logger.wandb"),
    "adapter": RunFile("adapter.safetensors", "the trainable weights", when="training"),
    "results": RunFile("results.json", "the run's record, with its provenance"),
    "eval": RunFile("eval", "src.eval's re-tests: eval/<time>/eval.json", when="never"),
    # Lightning's, in trainer.default_root_dir, when SLURM asks a job to requeue; removed once
    # fit has finished (src.run.launch.drop_requeue_checkpoints).
    "requeue": RunFile("hpc_ckpt_*.ckpt", "SLURM requeue checkpoints", when="never"),
}
RUN_OUTPUTS = tuple(entry.name for entry in RUN_FILES.values())

# Inside checkpoints/: the newest checkpoint's link (Lightning's name for it), and the
# checkpoint a signal's stop saves part-way through an epoch (replaced by the next epoch end).
LAST_CHECKPOINT = "last.ckpt"
STOPPED_CHECKPOINT = "stopped.ckpt"
# Inside csv/: Lightning's CSVLogger's file.
METRICS_CSV = "metrics.csv"
# Inside eval/<time>/ (src.eval's folder for one re-test): what it measured.
EVAL_RESULTS = "eval.json"


def run_file_name(role: str) -> str:
    """``${run_file:<role>}``: the name of a run-folder entry, for the configs' paths."""
    if role not in RUN_FILES:
        raise UserError(
            f"${{run_file:{role}}}: no such run-folder entry; one of {', '.join(RUN_FILES)}"
        )
    return RUN_FILES[role].name


class RunFolder:
    """The one writer of a run folder, and where every other writer gets its path.

    Paths: :attr:`config`, :attr:`results`, :attr:`adapter`, :attr:`summary`,
    :attr:`checkpoints`, :attr:`last_checkpoint`, :attr:`metrics_csv`, :attr:`launches`.
    Writes, on rank zero only: :meth:`begin`, :meth:`write_adapter`, :meth:`write_results`,
    :meth:`record_divergence`. :meth:`outputs` says what a run with given settings leaves.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._code: dict | None = None  # the code's git state when this launch began

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, role: str) -> Path:
        return self.path / RUN_FILES[role].name

    @property
    def config(self) -> Path:
        return self.file("config")

    @property
    def launches(self) -> Path:
        return self.file("launches")

    @property
    def first_launch_config(self) -> Path:
        """The composed (unresolved) config of the run's first launch, in Hydra's record."""
        return self.launches / "config.yaml"

    @property
    def results(self) -> Path:
        return self.file("results")

    @property
    def adapter(self) -> Path:
        return self.file("adapter")

    @property
    def summary(self) -> Path:
        return self.file("summary")

    @property
    def checkpoints(self) -> Path:
        return self.file("checkpoints")

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def stopped_checkpoint(self) -> Path:
        return self.checkpoints / STOPPED_CHECKPOINT

    @property
    def metrics_csv(self) -> Path:
        return self.file("csv") / METRICS_CSV

    def requeue_checkpoints(self) -> list[Path]:
        return sorted(self.path.glob(RUN_FILES["requeue"].name))

    def checkpoint_files(self) -> list[Path]:
        """``checkpoints/*.ckpt`` (epoch ends, the last.ckpt link) and the SLURM requeue
        checkpoints (``hpc_ckpt_<n>.ckpt``)."""
        return [*self.checkpoints.glob("*.ckpt"), *self.requeue_checkpoints()]

    @staticmethod
    def outputs(cfg: DictConfig) -> set[str]:
        """The entries a finished run with the settings ``cfg`` leaves in its folder."""
        return {entry.name for entry in RUN_FILES.values() if entry.in_finished_run(cfg)}

    # ------------------------------------------------------------------------------ writes

    def begin(self, cfg: DictConfig, *, replace: bool, new_config: bool) -> None:
        """The launch's first writes: clear a replaced run (``replace``), record the resolved
        config (``new_config``: not when the launch continues the folder's run) and the launch."""
        if not is_rank_zero():
            return
        from src.run.record import code_state

        self._code = code_state()  # now: the code may be edited while the run trains
        if replace:
            self._remove_outputs()
        if new_config:
            self.config.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, self.config, resolve=True)  # what this run really used
        self.record_launch(cfg)

    def _remove_outputs(self) -> None:
        for name in RUN_OUTPUTS:
            paths = self.path.glob(name) if glob.has_magic(name) else [self.path / name]
            for path in paths:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()

    def record_launch(self, cfg: DictConfig) -> None:
        """Hydra's own record of a launch (composed config, hydra config, typed overrides).

        Hydra would write it into ``.hydra/`` before the task runs, replacing the first launch's
        record and touching a finished run's folder even when the launch is refused
        (conf/hydra/default.yaml turns that off). Here the first launch writes ``.hydra/`` and
        each later one ``.hydra/launch_<time>/``.
        """
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
        target = self.launches
        if self.first_launch_config.exists():
            target = target / f"launch_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
            suffix = 1
            while target.exists():
                target = target.with_name(f"{target.name.split('+')[0]}+{suffix}")
                suffix += 1
        target.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, target / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), target / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), target / "overrides.yaml")

    def write_adapter(self, model, trainer) -> None:
        """The trainable weights (adapters + head) that ``src.eval`` loads."""
        if trainer.is_global_zero:
            from src.network import save_trainable

            save_trainable(model, self.adapter)

    def write_results(self, record: dict, trainer, status: str = "finished") -> None:
        """results.json: ``record``, the run's ``status`` (:func:`run_status` reads it) and
        its ``provenance`` (code, packages, hardware, and how ``trainer`` ran it)."""
        if not trainer.is_global_zero:
            return
        from src.run.record import provenance

        made_by = provenance(trainer, self._code)
        write_json(self.results, {**record, "status": status, "provenance": made_by})

    def record_divergence(self, identity: dict, diverged, trainer):
        """results.json says the run diverged (no weights are saved); ``diverged`` (a
        :class:`src.run.stopping.RunDiverged`) is raised again with one line that says what
        to do."""
        good = choose_good_checkpoint(self.path)
        self.write_results(
            {
                **identity,
                "diverged": {
                    "reason": str(diverged),
                    "step": diverged.step,
                    "epoch": diverged.epoch,
                },
                "last_good_checkpoint": good,
                "metrics": {},
            },
            trainer,
            status="diverged",
        )
        where = "no epoch had finished"
        if good is not None:
            where = f"the last good checkpoint is {Path(good).resolve()}"
        diverged.args = (
            f"training diverged: {diverged}; {where}; {self.results.name} says 'diverged'. Lower "
            "optim.lr (or sigma/lam) and start a new run",
        )
        raise diverged


@dataclass
class Launch:
    """What a checked launch will do to its folder."""

    run: RunFolder
    ckpt_path: str | None  # what trainer.fit starts from (None: epoch 0)
    continues_run: bool  # the folder's run goes on: its config.yaml stays as it is
    replaces_run: bool = False  # overwrite=true: the earlier run's outputs are removed first
    finished_metrics: dict | None = None  # a sweep's job that finished earlier: not run again

    @property
    def folder(self) -> Path:
        return self.run.path

    def begin(self, cfg: DictConfig) -> None:
        """The launch's first writes (:meth:`RunFolder.begin`), as this check decided."""
        self.run.begin(cfg, replace=self.replaces_run, new_config=not self.continues_run)


def run_status(folder: Path) -> str | None:
    """None (no run here), 'unfinished', or the status in results.json ('finished', 'diverged')."""
    run = RunFolder(folder)
    results = run.results
    if results.exists():
        try:
            return json.loads(results.read_text()).get("status", "finished")
        except (OSError, ValueError, AttributeError):
            return "finished"  # unreadable results still mean a run got to its end here
    started = run.config.exists() or bool(run.checkpoint_files())
    return "unfinished" if started else None


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_run_folder(cfg: DictConfig) -> Launch:
    """Check that this launch may use its folder; decide the checkpoint to start from.

    Raises :class:`UserError` (one line) when it may not. Writes nothing.
    """
    run = RunFolder(cfg.paths.output_dir)
    folder = run.path
    ckpt = cfg.get("ckpt_path") or None
    overwrite = bool(cfg.get("overwrite", False))
    check_writable(folder, cfg)
    status = run_status(folder) if is_rank_zero() else None  # other DDP ranks join rank 0's run
    if status is not None and overwrite:
        if ckpt == "last":
            raise UserError(
                "overwrite=true starts the run in this folder again and ckpt_path=last "
                "continues it; give only one of them"
            )
        say(f"overwrite=true: the {status} run in {folder} is replaced")
        return Launch(run, _explicit_checkpoint(ckpt), continues_run=False, replaces_run=True)
    if status in ("finished", "diverged") and in_multirun():
        # A sweep re-run into its folder (or a requeued job) skips the jobs that ended; a
        # sweeper (Optuna) still gets their value.
        say(f"{run.results} exists: this job {status} in an earlier launch; skipped")
        metrics = json.loads(run.results.read_text()).get("metrics", {})
        return Launch(run, None, continues_run=True, finished_metrics=metrics)
    if status in ("finished", "diverged"):
        raise UserError(
            f"{folder} holds a {status} run (see its {run.results.name}); evaluate it with "
            f"'python -m src.eval run_dir={folder}', start a new run in another folder, "
            "or add overwrite=true to replace it"
        )
    if status == "unfinished" and ckpt is None and in_multirun():
        ckpt = "last"  # a sweep re-run into its folder (or a requeued job) continues each job
    if status == "unfinished" and ckpt is None:
        raise UserError(
            f"{folder} holds an unfinished run; continue it with ckpt_path=last, or add "
            "overwrite=true to start it again"
        )
    if status == "unfinished" and run.config.is_file():
        check_same_config(run.config, cfg)
    if ckpt == "last":
        start = choose_resume_checkpoint(folder, started=status is not None)
    else:
        start = _explicit_checkpoint(ckpt)
    return Launch(run, start, continues_run=status is not None)


def _explicit_checkpoint(ckpt: str | None) -> str | None:
    if ckpt in (None, "last"):
        return None
    problem = checkpoint_problem(Path(ckpt))
    if problem is not None:
        raise UserError(f"ckpt_path {ckpt} {problem}; give a readable .ckpt file or 'last'")
    return ckpt


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (a short phrase), or None when it can.

    torch writes checkpoints as zip archives whose members carry CRCs, so reading them checks
    for truncation and corruption without unpickling anything.
    """
    if path.is_symlink() and not path.exists():
        return f"is a dangling link (to {os.readlink(path)})"
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "is truncated or not a checkpoint"
    if bad_member is not None:
        return f"is corrupt ({bad_member} fails its checksum)"
    return None


def saved_checkpoints(run: Path) -> list[Path]:
    """The run's checkpoint files other than the last.ckpt link, newest first."""
    return sorted(
        (
            p
            for p in RunFolder(run).checkpoint_files()
            if p.name != LAST_CHECKPOINT and not p.is_symlink()
        ),
        key=lambda p: (p.stat().st_mtime, p.name),
        reverse=True,
    )


def choose_good_checkpoint(run: Path) -> str | None:
    """The newest readable checkpoint of the run in folder ``run``, else None.

    That is last.ckpt (the newest epoch end), unless a requeue checkpoint is newer or last.ckpt
    cannot be read.
    """
    last = RunFolder(run).last_checkpoint
    readable = [p for p in saved_checkpoints(run) if checkpoint_problem(p) is None]
    if checkpoint_problem(last) is None and not (
        readable and readable[0].stat().st_mtime > last.stat().st_mtime
    ):
        return str(last)
    return str(readable[0]) if readable else None


def choose_resume_checkpoint(run: Path, started: bool) -> str | None:
    """``ckpt_path=last``: the run's newest readable checkpoint (:func:`choose_good_checkpoint`),
    saying so when last.ckpt is not it; none: start from epoch 0, or stop when some exist."""
    folder = RunFolder(run).checkpoints
    last = RunFolder(run).last_checkpoint
    problem = checkpoint_problem(last)
    good = choose_good_checkpoint(run)
    if good == str(last):
        say(f"resuming from {last}, the newest checkpoint of this run folder")
        return good
    requeued = good is not None and Path(good).parent == run  # hpc_ckpt_<n>.ckpt
    if requeued and (problem is None or not (last.exists() or last.is_symlink())):
        # A SLURM requeue, nothing broken: the checkpoint Lightning saved at the signal is newer
        # than the last epoch end, or no epoch had ended yet.
        say(
            f"resuming from {good}, the newest checkpoint of this run folder (saved when SLURM "
            "asked the job to requeue)"
        )
        return good
    if good is not None:
        reason = f"{last} {problem}" if problem else f"{good} is newer than {last}"
        say(f"{reason}; resuming from {good}, the newest readable checkpoint")
        return good
    others = saved_checkpoints(run)
    if others or last.is_symlink() or last.exists():
        raise UserError(
            f"no readable checkpoint in {folder}: {last.name} {problem}"
            + (f" and {len(others)} other checkpoint(s) are unreadable" if others else "")
            + "; add overwrite=true to start the run again"
        )
    if started:
        say(
            f"ckpt_path=last: no checkpoint in {folder} yet (no epoch had finished); "
            "training from the start"
        )
    else:
        say(f"ckpt_path=last: no {last} yet, starting a fresh run")
    return None


def check_writable(folder: Path, cfg: DictConfig | None = None) -> None:
    """Fail now, not after an epoch, when the run cannot write its outputs: the run folder, its
    ``checkpoints/`` and ``csv/``, and every folder a callback or logger of ``cfg`` writes to.

    A folder that does not exist yet is created by the run: its nearest existing parent must
    then be a writable folder. Writability is probed by creating a file, so a read-only
    filesystem or an immutable folder is found also when running as root (a mode does not stop
    root). ``data.cache_dir`` is not checked: a run writes it only when the decoded images
    exceed ``data.cache_limit_gb`` and reads it when the cache exists (a shared, read-only cache
    works); when it must write and cannot, the data setup stops with one line, before training.
    """
    run = RunFolder(folder)
    targets = {path: "hydra.run.dir" for path in (run.path, run.checkpoints, run.file("csv"))}
    for path, key in written_folders(cfg):
        targets.setdefault(path, key)
    for path, key in targets.items():
        problem = _write_problem(Path(os.path.abspath(path)))
        if problem is not None:
            raise UserError(
                f"cannot write into {path} ({problem}); make it writable or choose another "
                f"folder with {key}=..."
            )


def written_folders(cfg: DictConfig | None) -> list[tuple[Path, str]]:
    """The folders the config's callbacks and loggers write (checkpoints, logs, summary.csv),
    each with the key that names it."""
    folders: list[tuple[Path, str]] = []
    for group in ("callbacks", "logger"):
        nodes = (cfg or {}).get(group) or {}
        for name, node in nodes.items():
            if not OmegaConf.is_dict(node) or "_target_" not in node:
                continue
            for key in ("dirpath", "save_dir"):
                if isinstance(node.get(key), str) and node[key]:
                    sub = node.get("name") if key == "save_dir" else None
                    base = Path(node[key])
                    path = base / sub if isinstance(sub, str) and sub else base
                    folders.append((path, f"{group}.{name}.{key}"))
            if isinstance(node.get("path"), str) and node.path:
                folders.append((Path(node.path).parent, f"{group}.{name}.path"))
    return folders


def _write_problem(path: Path) -> str | None:
    """Why no file can be created in ``path`` (or in the folder that will hold it), or None."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return error.strerror
    return None


def flat_items(node, prefix: str = "") -> dict[str, object]:
    """{'a.b.c': leaf} for a nested dict; lists are leaves."""
    if not isinstance(node, dict):
        return {prefix: node}
    items: dict[str, object] = {}
    for key, value in node.items():
        items |= flat_items(value, f"{prefix}.{key}" if prefix else str(key))
    return items


def config_changes(saved: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every key a resume must keep (what decides the result or the
    replicate, ``src/run/keys.py``) that the two configs both have and differ in.

    Keys only one side has are skipped: a run written by an older version of the code lacks
    keys added since, and their defaults reproduce its behaviour. Paths inside the run folder
    are compared relative to it, so a run folder that was moved or copied still resumes.
    """
    before, after = _relative_to_run(flat_items(saved)), _relative_to_run(flat_items(new))
    return [
        f"{key} {before[key]!r} -> {after[key]!r}"
        for key in sorted(before.keys() & after.keys())
        if before[key] != after[key] and key_role(key).kept_on_resume
    ]


def _relative_to_run(items: dict[str, object]) -> dict[str, object]:
    folder = items.get("paths.output_dir")
    if not isinstance(folder, str) or not folder:
        return items
    return {
        key: value.replace(folder, "<run folder>") if isinstance(value, str) else value
        for key, value in items.items()
    }


def check_same_config(saved_path: Path, cfg: DictConfig) -> None:
    saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False)
    new = OmegaConf.to_container(cfg, resolve=True)
    changes = config_changes(saved, new)
    if changes:
        shown = "; ".join(changes[:3]) + (f" (and {len(changes) - 3} more)" if changes[3:] else "")
        raise UserError(
            f"refusing to continue {saved_path.parent} with another config: {shown}; resume "
            "with the run's own values (its config.yaml) or start a new run in another folder"
        )


def _launch_record(path: Path) -> bool:
    if path.is_symlink():
        return False
    is_launches = path.is_dir() and path.name == RUN_FILES["launches"].name
    return (path.is_file() and path.suffix == ".log") or is_launches


@contextlib.contextmanager
def forget_unused_folder(folder: Path, up_to: Path | None = None):
    """Remove the folder Hydra made for a launch that was refused before writing its run, and
    the empty log file Hydra opened in a folder that holds a run.

    Only a folder holding log files and Hydra's ``.hydra/`` record and nothing else is removed:
    a launch that got as far as writing leaves config.yaml or results, so such logs are of
    refused launches only. Parents up to
    ``up_to`` go too when that leaves them empty (``src.eval``'s ``<run_dir>/eval/<time>``).
    """
    try:
        yield
    except BaseException:
        if is_rank_zero() and folder.is_dir():
            for log in folder.glob("*.log"):  # opened by Hydra for this launch, never written
                if log.is_file() and not log.is_symlink() and log.stat().st_size == 0:
                    log.unlink()
            entries = list(folder.iterdir())
            if all(_launch_record(p) for p in entries):
                for entry in entries:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                for empty in [folder, *folder.parents]:
                    if up_to is not None and up_to not in [empty, *empty.parents]:
                        break
                    try:
                        empty.rmdir()
                    except OSError:
                        break
                    if up_to is None or empty == up_to:
                        break
            forget_unused_sweep(folder.parent)
        raise


def forget_unused_sweep(sweep: Path) -> None:
    """Remove a multirun's folder when the refused job was its only one: nothing but the
    ``multirun.yaml`` Hydra wrote before launching is left in it."""
    if not in_multirun() or sweep.resolve() != Path(_hydra_sweep_dir()).resolve():
        return
    if [p.name for p in sweep.iterdir()] == ["multirun.yaml"]:
        (sweep / "multirun.yaml").unlink()
        sweep.rmdir()


def _hydra_sweep_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().sweep.dir
