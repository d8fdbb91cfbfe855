"""SmolLM2 GGUF -> transformers folder, on a tiny random Llama GGUF file written here with ``gguf``.

The file has the layout llama.cpp writes (``blk.N.attn_q`` ..., a byte-level BPE vocabulary with
merges, control tokens, a chat template), so transformers reads it through the same GGUF path as
the real 98 MB file; its weights are random, so its perplexity is about its vocabulary size.
"""

import json

import numpy as np
import pytest

from src.errors import UserError
from tools.demo_assets import text_smollm2

gguf = pytest.importorskip("gguf", reason="gguf is not installed (the textdemo extra installs it)")
pytest.importorskip("accelerate", reason="accelerate is not installed (the textdemo extra has it)")
pytest.importorskip("transformers")

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (what byte-level BPE vocabularies hold)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    chars = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(extra)}
    return [chars[b] for b in range(256)]


def write_tiny_llama_gguf(path, d=32, ff=64, layers=2, heads=4, kv_heads=2, seed=0):
    rng = np.random.default_rng(seed)
    tokens = [*SPECIAL, *_byte_alphabet(), "Ġt", "he"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(d // heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL)))
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_chat_template(CHAT)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    hd = d // heads
    w.add_tensor("token_embd.weight", rand(len(tokens), d))  # tied: no output.weight
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for i in range(layers):
        for name, shape in (
            ("attn_q", (d, d)),
            ("attn_k", (kv_heads * hd, d)),
            ("attn_v", (kv_heads * hd, d)),
            ("attn_output", (d, d)),
            ("ffn_gate", (ff, d)),
            ("ffn_up", (ff, d)),
            ("ffn_down", (d, ff)),
        ):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return len(tokens)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    vocab = write_tiny_llama_gguf(path)
    return path, vocab


@pytest.mark.slow  # two GGUF loads and a save: ~1 min idle, minutes on a shared machine
def test_converted_folder_reloads_to_the_same_model(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, vocab = tiny_gguf
    out = tmp_path / "llama"
    r = text_smollm2.convert(path, out, max_perplexity=1e9)
    assert r["architecture"] == "LlamaForCausalLM" and r["tied_embeddings"]
    assert r["reload_max_abs_logit_diff"] == 0.0  # float32 weights saved as they were read
    assert vocab / 3 < r["perplexity"] < vocab * 3  # random weights: about uniform over vocab
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "provenance.json"} <= names
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == r["parameters"]
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["check"]["perplexity"] == r["perplexity"]
    assert text_smollm2.convert(path, out)["skipped"]


@pytest.mark.slow
def test_a_model_that_is_noise_is_refused(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    with pytest.raises(UserError, match="perplexity .* is not below 50"):
        text_smollm2.convert(path, tmp_path / "out", max_perplexity=50)
    assert not (tmp_path / "out").exists()


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        text_smollm2.convert(tmp_path / "none.gguf", tmp_path / "out")
