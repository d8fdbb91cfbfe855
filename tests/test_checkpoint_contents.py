"""Checkpoints and adapter.safetensors hold what trains, plus the frozen backbone's fingerprint."""

import pytest
import torch
from lightning import seed_everything
from omegaconf import open_dict

from src.backbones.fingerprint import frozen_fingerprint, tensor_fingerprint
from src.data.synthetic import write_vtab_task
from src.errors import UserError
from src.network import load_trainable
from src.train import build_finetuner, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root, "toy", num_classes=4, n_train=16, n_val=8, n_test=8, img_size=32)
    return root


def tiny(compose_cfg, data_root, output_dir, *overrides):
    cfg = compose_cfg(
        "debug=tiny",
        f"data.root={data_root}",
        "data.task=toy",
        "data.num_classes=4",
        "trainer.max_epochs=1",
        "+backbone.kwargs.depth=2",
        "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false",
        *overrides,
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def test_checkpoint_keeps_trainable_tensors_and_the_fingerprint(compose_cfg, data_root, tmp_path):
    cfg = tiny(compose_cfg, data_root, tmp_path / "run", "pace=fast")
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    seed_everything(cfg.seed, verbose=False)  # as train() does: the same random-init backbone
    finetuner = build_finetuner(cfg, 4)
    trainable = {f"model.{n}" for n, p in finetuner.model.named_parameters() if p.requires_grad}
    frozen = {f"model.{n}" for n, p in finetuner.model.named_parameters() if not p.requires_grad}
    saved = set(ckpt["state_dict"])
    assert trainable <= saved and not (frozen & saved)
    assert any("history" in key for key in saved)  # PACE-fast's buffer stays: it is state
    assert ckpt["frozen_fingerprint"] == frozen_fingerprint(finetuner.model)


def test_resume_on_another_backbone_is_one_line(compose_cfg, data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny(compose_cfg, data_root, out))
    # A random-init backbone is rebuilt from the seed: another seed is another backbone. (The
    # run's own folder refuses another config before loading: start a new folder from its file.)
    last = out / "checkpoints" / "last.ckpt"
    other = tiny(compose_cfg, data_root, tmp_path / "other", "seed=7", f"ckpt_path={last}",
                 "trainer.max_epochs=2")  # fmt: skip
    with pytest.raises(UserError, match="different frozen backbone"):
        train(other)


def test_eval_refuses_adapter_weights_of_another_backbone(compose_cfg, data_root, tmp_path):
    cfg = tiny(compose_cfg, data_root, tmp_path / "run")
    train(cfg)
    weights = tmp_path / "run" / "adapter.safetensors"
    seed_everything(cfg.seed, verbose=False)
    same = build_finetuner(cfg, 4).model
    load_trainable(same, weights)  # the run's own backbone loads
    seed_everything(7, verbose=False)
    other = build_finetuner(cfg, 4).model
    with pytest.raises(UserError, match="different frozen backbone"):
        load_trainable(other, weights)


def test_truncated_adapter_file_is_one_line(compose_cfg, data_root, tmp_path):
    cfg = tiny(compose_cfg, data_root, tmp_path / "run", "test=false")
    train(cfg)
    weights = tmp_path / "run" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_trainable(build_finetuner(cfg, 4).model, weights)


def test_fingerprint_sees_values_names_and_shapes():
    a = torch.zeros(2, 3)
    base = tensor_fingerprint([("w", a)])
    assert base == tensor_fingerprint([("w", a.clone())])
    assert base != tensor_fingerprint([("w", a + 1e-7)])
    assert base != tensor_fingerprint([("v", a)])
    assert base != tensor_fingerprint([("w", a.reshape(3, 2))])
