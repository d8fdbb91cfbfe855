"""The asset builders' shared frame: write-then-rename outputs and the one-line error exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output, run_command


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_atomic_output_replaces_only_on_success(tmp_path, kind):
    out = tmp_path / "deep" / "out"

    def build(tmp, text):
        if kind == "file":
            tmp.write_text(text)
        else:
            tmp.mkdir()
            (tmp / "a.txt").write_text(text)

    def read():
        return (out if kind == "file" else out / "a.txt").read_text()

    with atomic_output(out) as tmp:
        assert tmp.parent == out.parent and not tmp.exists()
        build(tmp, "one")
    assert read() == "one"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        build(tmp, "two")
        raise RuntimeError("interrupted")
    assert read() == "one"  # a failed build changes nothing
    with atomic_output(out) as tmp:
        build(tmp, "three")
    assert read() == "three"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no siblings left


def test_run_command_turns_a_user_error_into_one_line(capsys):
    parser = asset_parser("Do a thing.\n\nMore text.", "--src", None, "input", Path("o"), False)
    parser.add_argument("--fail", action="store_true")

    def build(args):
        if args.fail:
            raise UserError("it failed; pass less")
        print("done")

    assert parser.description == "Do a thing."
    assert "--force" not in parser.format_help()  # the builder always rewrites its output
    args = parser.parse_args(["--src", "x"])
    assert (args.src, args.out) == (Path("x"), Path("o"))
    assert run_command(parser, [], build) == 0
    assert capsys.readouterr().out == "done\n"
    assert run_command(parser, ["--fail"], build) == 2
    assert capsys.readouterr().err == "error: it failed; pass less\n"
