"""What the asset builders share: write-then-rename outputs and the common options."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.demo_assets.common import asset_parser, atomic_output


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


def test_asset_parser_has_the_shared_options():
    parser = asset_parser("Do a thing.\n\nMore text.", "--src", None, "input", Path("o"), False)
    assert parser.description == "Do a thing."
    assert "--force" not in parser.format_help()  # the builder always rewrites its output
    args = parser.parse_args(["--src", "x"])
    assert (args.src, args.out) == (Path("x"), Path("o"))
