"""What the asset builders share: outputs written beside their target and renamed into place, and
their common options (source, ``--out``, ``--force``). Their ``main`` ends a
:class:`~src.errors.UserError` in one ``error:`` line with every command's frame,
:func:`src.cli.entry.report_user_errors`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to build (a file or a folder) and rename it into place.

    Only a build that returns replaces ``out``; one that raises or is interrupted leaves ``out`` as
    it was and removes the temporary sibling, so no half-written output is ever left behind.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and out.exists():  # a folder cannot replace a folder in one rename
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            _remove(old)
        else:
            os.replace(tmp, out)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def asset_parser(
    doc: str,
    source: str,
    source_default: Path | None,
    source_help: str,
    out_default: Path,
    force: bool = True,
) -> argparse.ArgumentParser:
    """The options every asset builder has: ``source`` (what it reads), ``--out`` and ``--force``.

    The parser is described by the first paragraph of ``doc`` (a module docstring); a builder
    that always rewrites its output passes ``force=False`` and gets no ``--force``.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(source, type=Path, default=source_default, help=source_help)
    parser.add_argument(
        "--out", type=Path, default=out_default, help="where to write (default: %(default)s)"
    )
    if force:
        parser.add_argument(
            "--force", action="store_true", help="rebuild the output even if it is complete"
        )
    return parser
