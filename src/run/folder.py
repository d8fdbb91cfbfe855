"""The run folder's rules: what a launch may do to the folder it is pointed at.

A launch first *checks* (:func:`prepare_run_folder`: nothing is written) and only then *begins*
(:func:`begin_run`: the first writes). The checks guarantee that no command damages a run that
is already in the folder (docs/run_folders.md):

- a folder holding a finished (or diverged) run is refused unless ``overwrite=true``;
- a folder holding an unfinished run is continued only with ``ckpt_path=last`` and the same
  config (a conflicting one is refused with a one-line diff); its config.yaml is kept as it is;
- ``ckpt_path=last`` with a missing, dangling or corrupt ``last.ckpt`` resumes from the newest
  readable checkpoint and says so, or stops with one line;
- the folder must be writable.

No torch here: checkpoints are zip archives, checked with :mod:`zipfile`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.cli.entry import is_rank_zero, say, write_resolved_config
from src.errors import UserError
from src.run.keys import key_role

# What a run writes into its folder; `overwrite=true` removes these before the new run starts.
# Anything else in the folder (notes, train.log) is left alone.
RUN_OUTPUTS = (
    "config.yaml",
    "results.json",
    "adapter.safetensors",
    "summary.csv",
    "csv",
    "checkpoints",
    "tensorboard",
    "wandb",
    "eval",
    ".hydra",
)


@dataclass
class Launch:
    """What a checked launch will do to its folder."""

    folder: Path
    ckpt_path: str | None  # what trainer.fit starts from (None: epoch 0)
    continues_run: bool  # the folder's run goes on: its config.yaml stays as it is
    replaces_run: bool = False  # overwrite=true: the earlier run's outputs are removed first
    finished_metrics: dict | None = None  # a sweep's job that finished earlier: not run again


def run_status(folder: Path) -> str | None:
    """None (no run here), 'unfinished', or the status in results.json ('finished', 'diverged')."""
    results = folder / "results.json"
    if results.exists():
        try:
            return json.loads(results.read_text()).get("status", "finished")
        except (OSError, ValueError, AttributeError):
            return "finished"  # unreadable results still mean a run got to its end here
    started = (folder / "config.yaml").exists() or bool(checkpoint_files(folder))
    return "unfinished" if started else None


def checkpoint_files(folder: Path) -> list[Path]:
    """A run folder's checkpoints: ``checkpoints/*.ckpt`` (epoch ends, the last.ckpt link) and
    ``hpc_ckpt_<n>.ckpt`` (saved by Lightning when SLURM asks a job to requeue)."""
    return [*(folder / "checkpoints").glob("*.ckpt"), *folder.glob("hpc_ckpt_*.ckpt")]


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_run_folder(cfg: DictConfig) -> Launch:
    """Check that this launch may use its folder; decide the checkpoint to start from.

    Raises :class:`UserError` (one line) when it may not. Writes nothing.
    """
    folder = Path(cfg.paths.output_dir)
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
        return Launch(folder, _explicit_checkpoint(ckpt), continues_run=False, replaces_run=True)
    if status in ("finished", "diverged") and in_multirun():
        # A sweep re-run into its folder (or a requeued job) skips the jobs that ended; a
        # sweeper (Optuna) still gets their value.
        say(f"{folder / 'results.json'} exists: this job {status} in an earlier launch; skipped")
        metrics = json.loads((folder / "results.json").read_text()).get("metrics", {})
        return Launch(folder, None, continues_run=True, finished_metrics=metrics)
    if status in ("finished", "diverged"):
        raise UserError(
            f"{folder} holds a {status} run (see its results.json); evaluate it with "
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
    if status == "unfinished" and (folder / "config.yaml").is_file():
        check_same_config(folder / "config.yaml", cfg)
    if ckpt == "last":
        start = choose_resume_checkpoint(folder, started=status is not None)
    else:
        start = _explicit_checkpoint(ckpt)
    return Launch(folder, start, continues_run=status is not None)


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
        (p for p in checkpoint_files(run) if p.name != "last.ckpt" and not p.is_symlink()),
        key=lambda p: (p.stat().st_mtime, p.name),
        reverse=True,
    )


def choose_good_checkpoint(run: Path) -> str | None:
    """The newest readable checkpoint of the run in folder ``run``, else None.

    That is last.ckpt (the newest epoch end), unless a requeue checkpoint is newer or last.ckpt
    cannot be read.
    """
    last = run / "checkpoints" / "last.ckpt"
    readable = [p for p in saved_checkpoints(run) if checkpoint_problem(p) is None]
    if checkpoint_problem(last) is None and not (
        readable and readable[0].stat().st_mtime > last.stat().st_mtime
    ):
        return str(last)
    return str(readable[0]) if readable else None


def choose_resume_checkpoint(run: Path, started: bool) -> str | None:
    """``ckpt_path=last``: the run's newest readable checkpoint (:func:`choose_good_checkpoint`),
    saying so when last.ckpt is not it; none: start from epoch 0, or stop when some exist."""
    folder = run / "checkpoints"
    last = folder / "last.ckpt"
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
            f"no readable checkpoint in {folder}: last.ckpt {problem}"
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
    targets = {
        folder: "hydra.run.dir",
        folder / "checkpoints": "hydra.run.dir",
        folder / "csv": "hydra.run.dir",
    }
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


def begin_run(launch: Launch, cfg: DictConfig) -> None:
    """The launch's first writes: clear a replaced run, record the config and the command."""
    if not is_rank_zero():
        return
    if launch.replaces_run:
        for name in RUN_OUTPUTS:
            path = launch.folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    if not launch.continues_run:
        write_resolved_config(cfg, launch.folder / "config.yaml")
    record_launch(launch.folder, cfg)


def record_launch(folder: Path, cfg: DictConfig) -> None:
    """Hydra's own record of a launch (composed config, hydra config, typed overrides).

    Hydra would write it into ``.hydra/`` before the task runs, replacing the first launch's
    record and touching a finished run's folder even when the launch is refused
    (conf/hydra/default.yaml turns that off). Here the first launch writes ``.hydra/`` and each
    later one ``.hydra/launch_<time>/``.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    target = folder / ".hydra"
    if (target / "config.yaml").exists():
        target = target / f"launch_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        suffix = 1
        while target.exists():
            target = target.with_name(f"{target.name.split('+')[0]}+{suffix}")
            suffix += 1
    target.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, target / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), target / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), target / "overrides.yaml")


def _launch_record(path: Path) -> bool:
    if path.is_symlink():
        return False
    return (path.is_file() and path.suffix == ".log") or (path.is_dir() and path.name == ".hydra")


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
