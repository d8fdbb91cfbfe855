"""VTAB-layout task -> NOAH's few-shot layout, read back by the few-shot datamodule."""

from __future__ import annotations

from src.data.fewshot import FewShotDataModule
from src.data.synthetic import write_vtab_task
from tests.test_cli import error_line
from tools.demo_assets.to_fewshot import main as to_fewshot


def test_vtab_task_converts_to_the_fewshot_layout(tmp_path, capsys):
    source = write_vtab_task(tmp_path, "fm", num_classes=3, n_train=30, n_val=6, n_test=9)
    out = tmp_path / "few-shot" / "fm"
    paths = ["--source", str(source), "--out", str(out), "--classes", "3"]
    to_fewshot([*paths, "--shots", "1,2,4", "--seeds", "0,1"])
    names = sorted(p.name for p in (out / "annotations").iterdir())
    assert len(names) == 3 * 2 + 2 and "train_meta.list.num_shot_4.seed_1" in names
    draws = {}
    for k in (1, 2, 4):
        for s in (0, 1):
            dm = FewShotDataModule(
                str(tmp_path),
                "fm",
                num_classes=3,
                shots=k,
                split_seed=s,
                img_size=16,
                num_workers=0,
            )
            samples = dm.samples(dm.splits()["train"])
            assert sorted(label for _, label in samples) == sorted([0, 1, 2] * k)
            assert all(path.is_file() for path, _ in samples)
            draws[k, s] = {path for path, _ in samples}
    assert draws[1, 0] < draws[2, 0] < draws[4, 0]  # nested for one seed
    assert draws[4, 0] != draws[4, 1]  # another seed, another draw
    val = {p for p, _ in dm.samples("val_meta.list")}
    assert len(val) == 6 and not val & draws[4, 0] and len(dm.samples("test_meta.list")) == 9
    assert "fewer than 20 shots" in error_line(capsys, to_fewshot, [*paths, "--shots", "20"])
    # The failed rerun kept the lists; a rerun with fewer shots leaves none of the old ones.
    assert sorted(p.name for p in (out / "annotations").iterdir()) == names
    to_fewshot(
        [
            "--source",
            str(source),
            "--out",
            str(out),
            "--classes",
            "3",
            "--shots",
            "2",
            "--seeds",
            "0",
        ]
    )
    assert sorted(p.name for p in (out / "annotations").iterdir()) == [
        "test_meta.list",
        "train_meta.list.num_shot_2.seed_0",
        "val_meta.list",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "images", "to_fewshot.json"]


def test_bad_shot_list_is_one_error_line(tmp_path, capsys):
    source = write_vtab_task(tmp_path, "fm", num_classes=3, n_train=30, n_val=6, n_test=9)
    args = ["--source", str(source), "--out", str(tmp_path / "o"), "--shots", "a"]
    assert (
        error_line(capsys, to_fewshot, args) == "--shots and --seeds take comma-separated integers"
    )
