"""`python -m src.data.check` finds each planted defect and says how to fix it."""

from __future__ import annotations

import pytest

from src.data.check import main
from src.data.fewshot import FewShotDataModule
from src.data.fgvc import FGVCDataModule
from src.data.synthetic import write_fewshot_task, write_fgvc_task, write_vtab_task
from src.errors import UserError
from tests.test_cli import error_line


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A clean root with one VTAB, one FGVC and one few-shot task (small class counts)."""
    monkeypatch.setattr(FewShotDataModule, "tasks", {"toy": 3})
    monkeypatch.setattr(FGVCDataModule, "tasks", {"cub": 3})
    monkeypatch.setattr("src.data.fewshot.SHOTS", (1, 2))
    monkeypatch.setattr("src.data.fewshot.SPLIT_SEEDS", (0,))
    write_vtab_task(tmp_path, "eurosat", 10, n_train=20, n_val=10, n_test=10, img_size=8)
    write_fgvc_task(tmp_path, "CUB_200_2011", num_classes=3, counts=(6, 3, 3), img_size=8)
    write_fewshot_task(tmp_path, "toy", num_classes=3, shots=(1, 2), split_seeds=(0,), img_size=8)
    return tmp_path


def run(root, capsys, *args):
    code = main([str(root), "--sample", "100", *args])
    return code, capsys.readouterr().out


def block(out: str, name: str) -> str:
    """The lines of one task's report."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(name + " "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ")), len(lines)
    )
    return "\n".join(lines[start:end])


def test_clean_root_is_ok(root, capsys):
    code, out = run(root, capsys)
    assert code == 0
    assert block(out, "vtab/eurosat").splitlines() == [
        "  vtab/eurosat                 ok",
        "      train800: 20 images, 10/10 classes",
        "      val200: 10 images, 10/10 classes",
        "      train800val200: 30 images, 10/10 classes",
        "      test: 10 images, 10/10 classes",
    ]
    assert "fgvc/cub                     ok" in out and "fewshot/toy                  ok" in out
    assert (
        f"vtab/cifar                   MISSING: no folder cifar under {root}/vtab-1k/ or {root}/"
        in out
    )
    assert "domain: not present" in out


def test_malformed_list_line(root, capsys):
    listed = root / "vtab-1k/eurosat/train800.txt"
    lines = listed.read_text().splitlines()
    lines[4] = "images/train800/000004.jpg four"
    listed.write_text("\n".join(lines) + "\n")
    code, out = run(root, capsys)
    assert code == 1
    report = block(out, "vtab/eurosat")
    assert "BROKEN" in report and f"! {listed}:5: label 'four' is not an integer" in report


def test_missing_and_corrupt_images(root, capsys):
    (root / "vtab-1k/eurosat/images/test/000003.jpg").unlink()
    corrupt = root / "vtab-1k/eurosat/images/val200/000002.jpg"
    corrupt.write_bytes(b"not a jpeg")
    code, out = run(root, capsys)
    report = block(out, "vtab/eurosat")
    assert code == 1
    assert "! test: 1 of 10 listed images not found, e.g." in report and "000003.jpg" in report
    assert f"! val200: cannot decode image {corrupt}" in report
    assert "replace the file or remove its line from the list file" in report
    # A missing image is restored, never its line deleted: the list is the benchmark.
    assert "put the dataset's images where the list places them" in report
    assert "remove their lines" not in report


def test_fewshot_list_missing_a_class_and_missing_seed(root, capsys):
    listed = root / "few-shot/toy/annotations/train_meta.list.num_shot_2.seed_0"
    listed.write_text("\n".join(listed.read_text().splitlines()[:4]) + "\n")
    code, out = run(root, capsys, "--benchmark", "fewshot")
    report = block(out, "fewshot/toy")
    assert code == 1 and "vtab" not in out
    assert "      train_meta.list.num_shot_2.seed_0: 4 images, 2/3 classes" in report
    assert "! train_meta.list.num_shot_2.seed_0 has samples of 2 of 3 classes" in report


def test_fgvc_bad_json_and_unknown_label(root, capsys):
    (root / "fgvc/CUB_200_2011/val.json").write_text("{oops")
    (root / "fgvc/CUB_200_2011/test.json").write_text('{"x.jpg": 77}')
    code, out = run(root, capsys, "--benchmark", "fgvc")
    report = block(out, "fgvc/cub")
    assert code == 1
    assert "val.json is not valid JSON" in report
    assert "label 77 of 'x.jpg' does not occur in train.json" in report


def test_custom_folder_gets_the_arguments_it_loads_with(root, capsys):
    write_vtab_task(root, "fashion_mnist", num_classes=3, n_train=6, n_val=3, n_test=3, img_size=8)
    _, out = run(root, capsys, "--benchmark", "vtab")
    report = block(out, "vtab/fashion_mnist")
    assert "vtab/fashion_mnist (custom)" in report and "BROKEN" not in report
    advice = "loads as a custom task: data.task=fashion_mnist data.num_classes=3"
    assert advice in report
    # The advice works: the datamodule loads the folder with exactly these arguments.
    from src.data.vtab import VTABDataModule

    dm = VTABDataModule(str(root), "fashion_mnist", num_classes=3, num_workers=0, img_size=8)
    assert dm.train_size == 9


def test_unknown_fgvc_folder_gets_rename_advice_not_num_classes(root, capsys):
    write_fgvc_task(root, "my_birds", num_classes=3, counts=(6, 3, 3), img_size=8)
    _, out = run(root, capsys, "--benchmark", "fgvc")
    line = next(line for line in out.splitlines() if "my_birds" in line)
    # FGVC has no custom tasks, so data.num_classes would fail: the checker never suggests it.
    assert "num_classes" not in out
    assert "not read by FGVC; its folder names are: cub or CUB_200_2011;" in line
    assert "rename the folder if it is one of these" in line
    with pytest.raises(UserError, match="unknown FGVC task 'my_birds'"):
        FGVCDataModule(str(root), "my_birds", num_classes=3)


def test_missing_root_is_one_error_line(tmp_path, capsys):
    line = error_line(capsys, main, [str(tmp_path / "nowhere")])
    assert line.startswith(f"data root {tmp_path / 'nowhere'} does not exist; pass the folder")


def test_missing_training_lists_are_one_line(root, capsys):
    folder = root / "few-shot/toy/annotations"
    (folder / "train_meta.list.num_shot_1.seed_0").unlink()
    (folder / "train_meta.list.num_shot_2.seed_0").unlink()
    code, out = run(root, capsys, "--benchmark", "fewshot")
    report = block(out, "fewshot/toy")
    assert code == 1
    assert report.count("!") == 1
    assert (
        f"! 2 training list(s) not in {folder}: train_meta.list.num_shot_1.seed_0, "
        "train_meta.list.num_shot_2.seed_0; runs with those data.shots / data.split_seed stop"
    ) in report
