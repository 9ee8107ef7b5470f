"""Export round trip on the other supported architectures (Qwen2, GPT-2 Conv1D, T5 encoder-decoder)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from alter_cli.checkpoint import load_checkpoint
from alter_cli.cli import app
from alter_cli.mta import task_context

from .conftest import save_tiny
from .test_export import TOL, _inputs, _train, perturb_and_resign

runner = CliRunner()


def _logits(model, seq2seq: bool) -> torch.Tensor:
    ids, mask = _inputs()
    kw = {"decoder_input_ids": ids[:, :5]} if seq2seq else {}
    return model(input_ids=ids, attention_mask=mask, **kw).logits


@pytest.mark.parametrize("arch", ["qwen2", "gpt2", "t5"])
def test_export_round_trip_on_other_architectures(arch, synthetic_jsonl, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    base_dir = save_tiny(arch, tmp_path / "base")
    ck = _train(base_dir, synthetic_jsonl, tmp_path / "ck", expert="hydra_lora")
    perturb_and_resign(ck)
    seq2seq = arch == "t5"
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    loaded = load_checkpoint(ck)
    task = loaded.registry.names[1]
    ids, _ = _inputs()
    with torch.no_grad(), task_context(loaded.model, loaded.registry.ids([task] * ids.shape[0])):
        ref = _logits(loaded.model, seq2seq)
    for fmt in ("peft", "merged"):
        out = tmp_path / fmt
        res = runner.invoke(app, ["export", str(ck), "--out", str(out), "--format", fmt, "--task", task])
        assert res.exit_code == 0, res.output
        if fmt == "peft":
            model = PeftModel.from_pretrained(auto.from_pretrained(str(base_dir), dtype=torch.float32), str(out / task))
        else:
            model = auto.from_pretrained(str(out), dtype=torch.float32)
        with torch.no_grad():
            diff = float((ref - _logits(model.eval(), seq2seq)).abs().max())
        assert diff < TOL, (fmt, diff)
