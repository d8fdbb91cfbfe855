"""What the entry points share: error reporting, rank-zero output, atomic JSON files, W&B clean-up.

Nothing here imports torch, Lightning or timm: the entry points use it before composition is
validated, and ``--help`` or a config error must answer in about a second.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig

from src.errors import UserError

log = logging.getLogger(__name__)

# Exit status of a run stopped by Ctrl-C / SIGINT (128 + signal 2), as a shell reports it.
EXIT_INTERRUPTED = 130


class RunInterrupted(Exception):
    """The user (or a scheduler's signal) stopped a run; the message says what was saved and
    how to resume; ``exit_status`` is 128 + the signal's number."""

    def __init__(self, message: str, exit_status: int = EXIT_INTERRUPTED):
        super().__init__(message)
        self.exit_status = exit_status


def find_user_error(err: BaseException) -> UserError | None:
    """The UserError behind ``err``: Hydra's ``instantiate`` wraps what a target raises."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


# Exit status of a command stopped by a mistake the user can fix: argparse's own for a bad
# command line, so a shell sees one status for every kind of bad input.
EXIT_USER_ERROR = 2


def fail(line: str) -> NoReturn:
    """End the command on a mistake the user can fix: ``error: <line>`` on stderr, status 2."""
    print(f"error: {line}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


@contextmanager
def one_line_errors(config_name: str = "train") -> Iterator[None]:
    """The frame of every command: inside it a :class:`UserError` (or a mistake Hydra reports
    for ``config_name``) ends the command through :func:`fail`, a :class:`RunInterrupted` with
    ``interrupted: …`` and its signal's status; a programming error keeps its traceback."""
    try:
        yield
    except RunInterrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        sys.exit(stop.exit_status)
    except Exception as err:
        line = one_line_error(err, config_name)
        if line is None:
            raise
        fail(line)


def report_user_errors(fn):
    """``fn`` run inside :func:`one_line_errors`: the decorator of every command's ``main``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_line_errors():
            return fn(*args, **kwargs)

    return wrapper


def user_message(err: UserError) -> str:
    """The error's one line. A UserError raised in a DataLoader worker comes back re-raised as
    ``UserError("Caught UserError in DataLoader worker …Original Traceback…")``: keep only the
    original message, its last line."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith("src.errors.UserError: ") else last
    return " ".join(text.split())


def run_entry(hydra_main, config_name: str) -> None:
    """Run a ``@hydra.main`` entry so that mistakes Hydra catches before the task function runs
    (unknown group option or key, wrong type, unparsable override, missing required value, a
    folder it cannot write) also end in one ``error:`` line and exit status 2."""
    # Hydra then re-raises errors instead of printing its own multi-line report and exit 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = [sys.argv[0], *flags_first(sys.argv[1:])]
    from src.run.launch import explain_srun_once
    from src.run.stopping import StopRequested, describe_early_stop, entry_started

    explain_srun_once()
    entry_started()  # a signal now unwinds the launch (its folder is forgotten) to here
    with one_line_errors(config_name):
        try:
            hydra_main()
        except (StopRequested, KeyboardInterrupt) as stop:  # while Hydra composes, before main
            signum = getattr(stop, "signum", signal.SIGINT)
            print(f"interrupted: {describe_early_stop(signum, None, None)}", file=sys.stderr)
            sys.exit(128 + signum)
        except BrokenPipeError:
            # The reader went away (`--help | head`): quiet, with the status a shell gives SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)


# Hydra's flags that take no value: argparse accepts them only before the overrides.
_SWITCHES = ("-m", "--multirun", "-r", "--run", "--resolve")


def flags_first(arguments: list[str]) -> list[str]:
    """``key=value -m key=value`` as ``-m key=value key=value``: argparse stops reading the
    overrides at a flag and refuses those after it ("unrecognized arguments", a usage dump)."""
    switches = [a for a in arguments if a in _SWITCHES]
    return switches + [a for a in arguments if a not in _SWITCHES]


# OS errors a user fixes (permissions, a read-only filesystem, a file where a folder should
# be, a full disk), not the code.
ACCESS_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)
PATH_ERRORS = (*ACCESS_ERRORS, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT)


def find_path_error(err: BaseException | None) -> OSError | None:
    """The OSError about a path behind ``err`` (Hydra wraps the one that stopped it from
    opening train.log or making the run folder)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.filename and err.errno in PATH_ERRORS:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def describe_path_error(err: OSError) -> str:
    path = Path(err.filename)
    if err.errno == errno.ENOTDIR:
        blocking = next((p for p in [path, *path.parents] if p.is_file()), path)
        return (
            f"cannot create {path}: {blocking} is a file, not a folder; choose another folder "
            "with hydra.run.dir=..."
        )
    return (
        f"cannot write {path} ({err.strerror}); make the folder writable or choose another "
        "with hydra.run.dir=..."
    )


def one_line_error(err: BaseException, config_name: str = "train") -> str | None:
    """The one line for a mistake the user can fix, or None for a programming error."""
    from src.cli.hydra_errors import describe

    user_error = find_user_error(err)
    if user_error is not None:
        return user_message(user_error)
    if type(err).__name__ == "UncompletedJobError":  # submitit's, raised by hydra/launcher=slurm
        from src.run.slurm import describe_lost_job

        return describe_lost_job(str(err))
    path_error = find_path_error(err)
    if path_error is not None:
        return describe_path_error(path_error)
    return describe(err, config_name)


def is_rank_zero() -> bool:
    """True in the process that writes files: the launcher or DDP rank 0 (same env vars as
    Lightning's ``rank_zero_only``, read without importing Lightning)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def rank_zero(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if is_rank_zero():
            return fn(*args, **kwargs)
        return None

    return wrapper


@rank_zero
def say(message: str) -> None:
    """One line for the person at the terminal (stderr keeps stdout clean for piping)."""
    print(message, file=sys.stderr, flush=True)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a logger/callback group (None → nothing)."""
    import hydra

    if not group:
        return []
    return [hydra.utils.instantiate(node) for node in group.values() if node and "_target_" in node]


def prepare_wandb(cfg: DictConfig) -> None:
    """W&B goes offline (runs kept on disk for `wandb sync`) when no credentials exist."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg:
        return
    has_key = os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()
    if not has_key and os.environ.get("WANDB_MODE") != "online":
        wandb_cfg.offline = True
        wandb_cfg.log_model = False
        log.info("W&B: no API key found, logging offline under %s", wandb_cfg.save_dir)


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun does not log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


@rank_zero
def write_json(path: Path, payload: dict) -> None:
    """``payload`` as ``path``, whole or not at all: written beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def to_float_dict(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}
