"""Hugging Face transformers backbones: a BERT/RoBERTa-style encoder or a Phi-3/Llama-style decoder
with its task head, wrapped so the rest of the project treats it like a timm model.

Where the model comes from (``backbone.path``, ``backbone.name``, ``backbone.weights``):

- ``path``: a local folder with ``config.json``, ``model.safetensors`` and the tokenizer files
  (what ``save_pretrained`` writes, or a hub snapshot folder);
- else ``name``: a model id (``roberta-base``) read from the Hugging Face cache only — the hub is
  never contacted (``HF_HUB_OFFLINE=1``, ``local_files_only``), so nothing hangs without network;
- ``weights=random``: the architecture from that config with random weights (seeded by the run's
  seed), e.g. for a smoke run; ``weights=pretrained`` (default) loads the saved weights.

Nothing on disk gives one ``error:`` line naming the model id, the folder that would do and the key.

:class:`TextModel` takes one LongTensor ``[B, 2, T]`` (token ids and attention mask stacked), so a
batch stays ``(inputs, label, index)`` and PACE's ``[x; x]`` and ``x[:half]`` work unchanged. Its
``get_classifier()`` is the task head (the classifier, or the LM head), which PACE's schedule
treats as block L.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from src.adapters.sites import TEXT_ARCHITECTURES
from src.errors import UserError, check_choice

log = logging.getLogger(__name__)

# The hub is never contacted: a missing model is a one-line error, not a hanging download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LIBRARY = "transformers"
OBJECTIVES = ("classification", "regression", "causal_lm")
WEIGHTS = ("pretrained", "random")
# What a local model folder holds (for messages).
FOLDER_FILES = "config.json, model.safetensors and the tokenizer files"


def is_text_backbone(backbone_cfg) -> bool:
    """Whether a ``backbone`` config group names a transformers model (else timm)."""
    return (backbone_cfg.get("library") if hasattr(backbone_cfg, "get") else None) == LIBRARY


def model_source(name: str | None, path: str | None) -> str:
    """The folder (``path``) or model id (``name``) that transformers reads, or a one-line error."""
    if path:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            what = (
                "does not exist" if not folder.exists() else f"has no config.json ({FOLDER_FILES})"
            )
            raise UserError(
                f"backbone.path {folder} {what}; point backbone.path at a folder written by "
                "save_pretrained (or a hub snapshot folder)"
            )
        return str(folder)
    if not name:
        raise UserError(
            f"no model given: set backbone.path=<folder> (a folder with {FOLDER_FILES}) or "
            "backbone.name to a model id in the Hugging Face cache"
        )
    return name


def _not_on_disk(name: str, error: Exception) -> UserError:
    return UserError(
        f"transformers model '{name}' is not on this machine (not in the Hugging Face cache, and "
        f"the hub is offline: {type(error).__name__}); put {FOLDER_FILES} of '{name}' in a folder "
        "(e.g. `hf download " + name + " --local-dir <folder>` where there is network) and pass "
        "backbone.path=<folder>"
    )


def load_config(name: str | None, path: str | None, overrides=None):
    from transformers import AutoConfig

    source = model_source(name, path)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except OSError as error:
        raise _not_on_disk(source, error) from None
    except ValueError as error:  # an unknown model_type in config.json
        raise UserError(f"cannot read the config of '{source}': {error}") from None
    for key, value in dict(overrides or {}).items():
        if not hasattr(config, key):
            raise UserError(f"backbone.kwargs.{key}: the {config.model_type} config has no '{key}'")
        setattr(config, key, value)
    return config


def load_tokenizer(name: str | None, path: str | None):
    """The model's tokenizer from the same folder or cache; pad token = EOS when it has none."""
    from transformers import AutoTokenizer

    source = model_source(name, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        if path:
            raise UserError(
                f"cannot load a tokenizer from {source} ({type(error).__name__}); the folder needs "
                "tokenizer.json (or vocab.txt / vocab.json + merges.txt) and tokenizer_config.json"
            ) from None
        raise _not_on_disk(source, error) from None
    if tokenizer.pad_token is None:  # decoders (Phi-3, Llama) often have none
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quiet_transformers() -> None:
    """No per-load report tables or weight-loading bars: a new head's keys are expected to be
    missing (the run's log says what was built)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _auto_class(objective: str):
    import transformers

    if objective == "causal_lm":
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForSequenceClassification


def build_text_backbone(
    name: str | None,
    num_classes: int,
    objective: str = "classification",
    family: str = "encoder",
    path: str | None = None,
    weights: str = "pretrained",
    kwargs=None,
) -> TextModel:
    """A transformers model with the head ``objective`` needs, wrapped as a :class:`TextModel`.

    ``classification``: ``num_classes`` logits; ``regression``: one value (STS-B);
    ``causal_lm``: the model's own LM head (``num_classes`` is ignored).
    """
    check_choice("backbone.family", family, TEXT_ARCHITECTURES)
    check_choice("data.objective", objective, OBJECTIVES)
    check_choice("backbone.weights", weights, WEIGHTS)
    if objective == "causal_lm" and family != "decoder":
        raise UserError(
            "a causal-LM objective (GSM-8K) needs a decoder backbone (backbone=phi3_mini or "
            "backbone=text_decoder)"
        )
    if objective != "causal_lm" and family != "encoder":
        raise UserError(
            f"the {objective} objective (GLUE) needs an encoder backbone (backbone=roberta_base "
            "or backbone=text_encoder)"
        )
    quiet_transformers()
    config = load_config(name, path, kwargs)
    if objective != "causal_lm":
        config.num_labels = 1 if objective == "regression" else num_classes
        config.problem_type = "regression" if objective == "regression" else None
    config.use_cache = False  # training and scoring never reuse keys/values; generate() does
    auto = _auto_class(objective)
    source = model_source(name, path)
    if weights == "random":
        hf = auto.from_config(config, dtype=torch.float32)
    else:
        try:
            hf = auto.from_pretrained(
                source, config=config, local_files_only=True, dtype=torch.float32
            )
        except OSError as error:
            raise _not_on_disk(source, error) from None
    # from_pretrained returns eval mode; like a timm model, start in training mode (the config's
    # dropout active while training, Lightning switches to eval for validation and test).
    model = TextModel(hf, family, objective).train()
    if objective != "causal_lm":
        reset_text_head(model.get_classifier(), config.initializer_range)
    log.info(
        "built %s %s (%.2fM parameters, weights: %s)",
        config.model_type,
        family,
        sum(p.numel() for p in model.parameters()) / 1e6,
        weights if weights == "random" else source,
    )
    return model


def reset_text_head(head: nn.Module, std: float) -> None:
    """A fresh task head even when the folder holds one (a fine-tuned model's): N(0, std²)
    weights, zero biases — BERT/RoBERTa's own initialisation of a new classifier."""
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class TextModel(nn.Module):
    """A transformers model as the project's adapters, PACE and module see a backbone.

    ``forward(x)`` takes ``x = [B, 2, T]`` (ids, attention mask) and returns the head's output:
    ``[B, C]`` class logits, ``[B, 1]`` a regression value, or ``[B, T, V]`` next-token logits.
    """

    # PACE's twin pass duplicates only a block's first argument (the hidden states); a
    # transformers layer also takes the attention mask, so the copies run [x; x] from the start.
    shares_twin_prefix = False

    def __init__(self, hf: nn.Module, family: str, objective: str):
        super().__init__()
        self.hf = hf
        self.text_family = family
        self.objective = objective
        self._check_blocks()

    def _check_blocks(self) -> None:
        base = self.hf.base_model
        found = (
            hasattr(getattr(base, "encoder", None), "layer")
            if self.text_family == "encoder"
            else isinstance(getattr(base, "layers", None), nn.ModuleList)
        )
        if not found:
            where = "encoder.layer" if self.text_family == "encoder" else "layers"
            raise UserError(
                f"{type(self.hf).__name__} keeps no blocks in {where} (backbone.family="
                f"{self.text_family}); choose the family that matches the model"
            )

    def get_classifier(self) -> nn.Module:
        if self.objective == "causal_lm":
            return self.hf.get_output_embeddings()
        # BERT: classifier (Linear after the pre-trained pooler); RoBERTa: classifier
        # (dense + tanh + out_proj on the <s> token). Both are new and train with the adapter.
        return self.hf.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        return self.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits

    @torch.no_grad()
    def generate(self, x: torch.Tensor, max_new_tokens: int, pad_token_id: int, eos_token_id):
        """Greedy continuations of left-padded prompts ``x = [B, 2, T]``: the new tokens only."""
        ids, mask = x[:, 0], x[:, 1]
        out = self.hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            use_cache=True,
        )
        return out[:, ids.shape[1] :]
