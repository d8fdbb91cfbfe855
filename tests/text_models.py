"""Tiny real-format transformers model folders for tests (no hub): config.json, model.safetensors
and a tokenizer built with ``tokenizers`` — a WordPiece BERT, a byte-level BPE RoBERTa and a
Phi-3-shaped decoder (and a Llama one), each written with ``save_pretrained``."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "the a an is was it this that good bad great terrible movie film plot actor not very and or "
    "but of to in on with for question answer how many what total each has have had more less "
    "then so he she they apples pens books costs dollars sentence one two three four five six "
    "seven eight nine ten buys sells gives left"
).split()
CORPUS = [" ".join(WORDS[i : i + 9]) for i in range(0, len(WORDS), 3)] + [
    "0 1 2 3 4 5 6 7 8 9 #### 12 + 30 = 42 . , ? ! $ ' \" ( ) * / - : ;",
]


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _bpe_tokenizer(roberta: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    if roberta:
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
    # A decoder's tokenizer: no pad token of its own (as Phi-3/Llama), EOS = </s>.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny_encoder(folder: Path, kind: str = "roberta", layers: int = 2, seed: int = 0) -> Path:
    """A tiny BERT (WordPiece) or RoBERTa (byte-level BPE), random weights, in ``folder``."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    folder = Path(folder)
    tokenizer = _wordpiece_tokenizer() if kind == "bert" else _bpe_tokenizer(roberta=True)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if kind == "bert":
        model = BertModel(BertConfig(max_position_embeddings=128, **common))
    else:
        model = RobertaModel(
            RobertaConfig(
                max_position_embeddings=130,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **common,
            )
        )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_decoder(folder: Path, kind: str = "phi3", layers: int = 2, seed: int = 0) -> Path:
    """A tiny Phi-3-shaped (fused qkv/gate_up) or Llama decoder with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    folder = Path(folder)
    tokenizer = _bpe_tokenizer(roberta=False)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if kind == "phi3":
        model = Phi3ForCausalLM(Phi3Config(pad_token_id=tokenizer.eos_token_id, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
