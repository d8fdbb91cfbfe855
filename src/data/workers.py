"""What DataLoader worker processes need from the machine, checked before a run starts.

A worker hands each batch's tensors to the training process by passing file descriptors over a
unix socket that :mod:`multiprocessing` creates under ``$TMPDIR``
(``<tmp>/pymp-XXXXXXXX/listener-XXXXXXXX``; torch's default ``file_descriptor`` sharing on
Linux). A socket path may hold at most 107 bytes. With a longer ``$TMPDIR`` the send fails in the
worker's background thread, which prints a traceback and drops the batch, and the training
process waits for that batch forever. Measured: a 2-worker DataLoader under an 85-character
``$TMPDIR`` raised ``OSError: AF_UNIX path too long`` in each worker and delivered nothing. Cluster
jobs often get a long per-job ``$TMPDIR``, so a launch with workers checks it first.
"""

from __future__ import annotations

import os
import sys
import tempfile

from src.errors import UserError

# Linux's sun_path holds 108 bytes, the last one the terminating NUL.
SOCKET_PATH_MAX = 107
# The longest socket path multiprocessing makes under the temporary folder (random parts: 8).
_SOCKET_UNDER_TMP = os.path.join("pymp-XXXXXXXX", "listener-XXXXXXXX")


def worker_temp_dir_problem(num_workers: int, temp_dir: str | None = None) -> str | None:
    """Why ``num_workers`` DataLoader workers could not hand batches over with the temporary
    folder ``temp_dir`` (default: ``$TMPDIR`` as :mod:`tempfile` reads it), or None."""
    if not num_workers or num_workers <= 0 or sys.platform != "linux":
        return None
    folder = os.path.abspath(temp_dir or tempfile.gettempdir())
    length = len(os.fsencode(os.path.join(folder, _SOCKET_UNDER_TMP)))
    if length <= SOCKET_PATH_MAX:
        return None
    return (
        f"data.num_workers={num_workers}: DataLoader workers pass batches through sockets under "
        f"$TMPDIR={folder}, whose paths would be {length} bytes (at most {SOCKET_PATH_MAX}), and "
        "the run would wait for its first batch forever; set TMPDIR to a shorter folder "
        "(e.g. TMPDIR=/tmp) or data.num_workers=0"
    )


def check_worker_temp_dir(num_workers: int | None) -> None:
    """Raise a UserError when :func:`worker_temp_dir_problem` finds one."""
    problem = worker_temp_dir_problem(num_workers or 0)
    if problem is not None:
        raise UserError(problem)
