"""Tiny Llama-, Qwen2-, GPT-2- and T5-style models + a character tokenizer, built in code (no download)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

SPECIALS = ["<pad>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHARS = list(string.ascii_lowercase + string.digits + " \n|.,:;!?-'\"()_")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(kind: str = "causal"):
    """Character-level fast tokenizer. causal: eos <|im_end|> and a chat template; seq2seq: eos </s>
    appended to every encoded text (T5 convention)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    if kind == "seq2seq":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                   unk_token="<unk>", bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(arch: str, seed: int = 0, layers: int = 2):
    """A tiny randomly initialised model of `arch` (llama | qwen2 | gpt2 | t5), eval mode, float32."""
    import transformers as tf

    torch.manual_seed(seed)
    v = len(SPECIALS) + len(CHARS)
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=0, eos_token_id=4, bos_token_id=3)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=0, eos_token_id=4, bos_token_id=3)
        model = tf.Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=v, n_embd=32, n_layer=layers, n_head=4, n_positions=256, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, eos_token_id=4, bos_token_id=3)
        model = tf.GPT2LMHeadModel(cfg)
    elif arch == "t5":
        cfg = tf.T5Config(vocab_size=v, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=layers,
                          num_decoder_layers=layers, dropout_rate=0.0, feed_forward_proj="relu",
                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        model = tf.T5ForConditionalGeneration(cfg)
    else:
        raise ValueError(arch)
    return model.eval()


def save_tiny(arch: str, path: Path, layers: int = 2) -> Path:
    model = make_model(arch, layers=layers)
    model.save_pretrained(path)
    make_tokenizer("seq2seq" if arch == "t5" else "causal").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    return save_tiny("t5", tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def synthetic_jsonl(tmp_path_factory) -> Path:
    from alter_cli.sources.synthetic import make_jsonl

    p = tmp_path_factory.mktemp("data") / "train.jsonl"
    p.write_text(make_jsonl(24, seed=1))
    return p


def stage1_dict(model_dir: Path, data: Path, **train) -> dict:
    """A stage-1 config (as a dict) for the tiny models and the synthetic tasks."""
    from alter_cli.sources.synthetic import task_configs

    return {
        "model": {"name": str(model_dir)},
        "tasks": task_configs(),
        "data": {"train": str(data), "max_length": 48, "max_target_length": 12},
        "mta": {"num_experts": 4, "rank": 8},
        "train": {"max_steps": 6, "batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 1, "log_every": 2,
                  "seed": 7, **train},
    }


def one_line_error(result, *needles):
    """Assert a CliRunner result is a user error: exit 2, one stderr line holding every needle, no traceback."""
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output, err
    for n in needles:
        assert n in err, err
