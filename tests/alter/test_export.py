"""`alter export`: a task's stage-1 mixture as one PEFT LoRA adapter / one merged model, with the same
logits as alter (1e-5); what has no exact LoRA form is refused in one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alter_cli.checkpoint import ADAPTER_WEIGHTS, MANIFEST, load_checkpoint
from alter_cli.cli import app
from alter_cli.config import AlterConfig
from alter_cli.data import TaskRegistry, parse_jsonl
from alter_cli.inject import mta_state_dict
from alter_cli.mta import mta_layers, task_context
from alter_cli.swap import file_sha256
from alter_cli.train import run_training

from .conftest import one_line_error, stage1_dict

runner = CliRunner()
TOL = 1e-5


def _train(model_dir: Path, data: Path, out: Path, **mta) -> Path:
    d = stage1_dict(model_dir, data, max_steps=2)
    d["mta"].update(mta)
    cfg = AlterConfig.model_validate(d)
    ex = parse_jsonl(data.read_text(), str(data), TaskRegistry.from_config(cfg.tasks))
    run_training(cfg, 1, train_examples=ex, out_dir=out)
    return out


def perturb_and_resign(ckpt: Path, seed: int = 0, one_hot: bool = False) -> None:
    """Give the checkpoint's LoRA B and selector non-trivial values (B ~ 0.3·N(0,1), selector logits
    spread so that α is far from uniform; one_hot: α one-hot to float32), rewrite its MTA weights and
    the manifest's hash of them (the checkpoint stays one consistent save)."""
    from safetensors.torch import save_file

    ck = load_checkpoint(ckpt)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in mta_layers(ck.model):
            for name, p in layer.experts.named_parameters():
                if name.startswith("lora_B"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
            sel = 0.05 * torch.randn(layer.selector.shape, generator=g)
            if one_hot:
                sel[torch.arange(sel.shape[0]), torch.arange(sel.shape[0]) % sel.shape[1]] += 5.0  # gap 50 after /τ
            layer.selector.copy_(sel)
    save_file(mta_state_dict(ck.model), str(ckpt / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"][ADAPTER_WEIGHTS] = file_sha256(ckpt / ADAPTER_WEIGHTS)
    (ckpt / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")


def _inputs(n: int = 3, length: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row
    return ids, mask


def alter_logits(ckpt: Path, task: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    ck = load_checkpoint(ckpt)
    ck.model.to(dtype)
    ids, mask = _inputs()
    with torch.no_grad(), task_context(ck.model, ck.registry.ids([task] * ids.shape[0])):
        return ck.model(input_ids=ids, attention_mask=mask).logits


def peft_logits(base_dir: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().max()) > 0.1 for p in lora_b)  # the exported B were loaded, not zero-init
    ids, mask = _inputs()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def merged_logits(folder: Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
    assert not any("alter_mta" in k for k in model.state_dict())
    ids, mask = _inputs()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.fixture(scope="module")
def hydra_ckpt(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> Path:
    out = _train(tiny_llama_dir, synthetic_jsonl, tmp_path_factory.mktemp("hydra") / "ck", expert="hydra_lora",
                 lora_alpha=16.0)
    perturb_and_resign(out)
    return out


def test_hydra_lora_exports_one_peft_adapter_per_task_with_alter_logits(hydra_ckpt, tiny_llama_dir, tmp_path):
    out = tmp_path / "adapters"
    res = runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(out), "--format", "peft"])
    assert res.exit_code == 0, res.output
    registry = load_checkpoint(hydra_ckpt).registry
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(registry.names)
    cfg = json.loads((out / registry.names[0] / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16.0 and cfg["peft_type"] == "LORA"
    assert len(cfg["target_modules"]) == 6  # gate/up/down of both blocks
    worst = 0.0
    ref0 = None
    for task in registry.names:
        ref, got = alter_logits(hydra_ckpt, task), peft_logits(tiny_llama_dir, out / task)
        worst = max(worst, float((ref - got).abs().max()))
        ref0 = ref if ref0 is None else ref0
    assert worst < TOL, worst
    # the tasks' mixtures differ, so the per-task adapters are not one adapter copied
    assert float((alter_logits(hydra_ckpt, registry.names[1]) - ref0).abs().max()) > 1e-3
    alpha = json.loads((out / registry.names[0] / "alter_export.json").read_text())["alpha_per_layer"]
    assert len(alpha) == 2 and max(alpha[0]) - min(alpha[0]) > 0.05  # a non-uniform α
    # again: refused without --overwrite; replaced with it
    one_line_error(runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(out), "--format", "peft"]),
                   "exists", "--overwrite")
    res = runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(out), "--format", "peft", "--task",
                              registry.names[2], "--overwrite"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in out.iterdir() if p.is_dir()] == [registry.names[2]]


def test_hydra_lora_merged_model_has_alter_logits(hydra_ckpt, tmp_path):
    registry = load_checkpoint(hydra_ckpt).registry
    task = registry.names[1]
    out = tmp_path / "merged"
    res = runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(out), "--format", "merged", "--task", task])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    diff = float((alter_logits(hydra_ckpt, task) - merged_logits(out)).abs().max())
    assert diff < TOL, diff
    one_line_error(runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(tmp_path / "m2"), "--format",
                                       "merged"]), "--task")
    assert not (tmp_path / "m2").exists()


def test_lora_experts_export_only_with_a_one_hot_selector(tiny_llama_dir, synthetic_jsonl, tmp_path):
    ck = _train(tiny_llama_dir, synthetic_jsonl, tmp_path / "ck", expert="lora")
    perturb_and_resign(ck)
    res = runner.invoke(app, ["export", str(ck), "--out", str(tmp_path / "x"), "--format", "peft"])
    one_line_error(res, "one-hot", "hydra_lora")
    assert not (tmp_path / "x").exists()
    perturb_and_resign(ck, one_hot=True)
    registry = load_checkpoint(ck).registry
    res = runner.invoke(app, ["export", str(ck), "--out", str(tmp_path / "p"), "--format", "peft"])
    assert res.exit_code == 0, res.output
    task = registry.names[1]
    diff = float((alter_logits(ck, task) - peft_logits(tiny_llama_dir, tmp_path / "p" / task)).abs().max())
    assert diff < TOL, diff
    res = runner.invoke(app, ["export", str(ck), "--out", str(tmp_path / "m"), "--format", "merged", "--task", task])
    assert res.exit_code == 0, res.output
    diff = float((alter_logits(ck, task) - merged_logits(tmp_path / "m")).abs().max())
    assert diff < TOL, diff


def test_bottleneck_and_stage2_checkpoints_are_refused(tiny_llama_dir, synthetic_jsonl, tmp_path):
    from alter_cli.config import Stage2Config
    from alter_cli.stage2 import Stage2Wiring

    s1 = _train(tiny_llama_dir, synthetic_jsonl, tmp_path / "s1")  # bottleneck (the default)
    for fmt in ("peft", "merged"):
        res = runner.invoke(app, ["export", str(s1), "--out", str(tmp_path / "x"), "--format", fmt, "--task", "copy"])
        one_line_error(res, "bottleneck experts cannot be exported exactly", "hydra_lora")
    cfg = Stage2Config.model_validate({
        "stage1": str(s1), "data": {"train": str(synthetic_jsonl), "max_length": 48, "max_target_length": 12},
        "mta": {"num_shared_experts": 1}, "train": {"max_steps": 1, "batch_size": 4, "warmup_steps": 0}})
    wiring = Stage2Wiring(cfg)
    ex = parse_jsonl(synthetic_jsonl.read_text(), "d", load_checkpoint(s1).registry)
    run_training(cfg, 2, train_examples=ex, out_dir=tmp_path / "s2", setup_model=wiring.setup_model,
                 extra_loss=wiring.extra_loss)
    wiring.close()
    res = runner.invoke(app, ["export", str(tmp_path / "s2"), "--out", str(tmp_path / "x"), "--format", "peft"])
    one_line_error(res, "stage-2", "input-dependent gate", "stage-1 checkpoint")
    assert not (tmp_path / "x").exists()


def test_missing_corrupt_checkpoint_and_bad_flags_exit_2(hydra_ckpt, tmp_path):
    import shutil

    one_line_error(runner.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--format",
                                       "peft"]), "no such directory")
    bad = tmp_path / "bad"
    shutil.copytree(hydra_ckpt, bad)
    data = bytearray((bad / ADAPTER_WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / ADAPTER_WEIGHTS).write_bytes(bytes(data))
    one_line_error(runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "o"), "--format", "peft"]),
                   ADAPTER_WEIGHTS)
    one_line_error(runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(tmp_path / "o"), "--format", "gguf"]),
                   "--format", "peft or merged")
    one_line_error(runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(tmp_path / "o"), "--format", "peft",
                                       "--task", "summarise"]), "--task 'summarise': unknown task")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    one_line_error(runner.invoke(app, ["export", str(hydra_ckpt), "--out", str(mine), "--format", "peft",
                                       "--overwrite"]), "not an alter output")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_lora_baseline_is_exported_as_it_is_and_merged(tiny_llama_dir, synthetic_jsonl, tmp_path):
    from alter_cli.baseline import build_baseline

    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=2, learning_rate=5e-2))
    ex = parse_jsonl(synthetic_jsonl.read_text(), "d", TaskRegistry.from_config(cfg.tasks))
    base_ck = tmp_path / "lora"
    run_training(cfg, 0, train_examples=ex, out_dir=base_ck, setup_model=lambda c: build_baseline(c)[0])
    res = runner.invoke(app, ["export", str(base_ck), "--out", str(tmp_path / "p"), "--format", "peft"])
    assert res.exit_code == 0, res.output
    for task in TaskRegistry.from_config(cfg.tasks).names:
        assert (tmp_path / "p" / task / ADAPTER_WEIGHTS).read_bytes() == (base_ck / ADAPTER_WEIGHTS).read_bytes()
    res = runner.invoke(app, ["export", str(base_ck), "--out", str(tmp_path / "m"), "--format", "merged"])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(base_ck)
    ids, mask = _inputs()
    with torch.no_grad():
        ref = ck.model(input_ids=ids, attention_mask=mask).logits
    diff = float((ref - merged_logits(tmp_path / "m")).abs().max())
    assert diff < TOL, diff


@pytest.mark.slow
def test_smollm2_export_peft_and_merged_match_alter(tmp_path):
    """The embedded default (SmolLM2-135M-Instruct, dequantised GGUF): a hydra_lora stage-1 checkpoint
    with perturbed B and selector, written by the real save path, exported both ways."""
    from alter_cli.checkpoint import checkpoint_meta, save_checkpoint_files, write_adapter
    from alter_cli.config import MTAConfig, TaskConfig
    from alter_cli.inject import attach_mta
    from alter_cli.models import DEFAULT_CACHE_NAME, cache_root, load_base_model
    from alter_cli.sources.synthetic import task_configs
    from alter_cli.swap import begin
    from alter_cli.train import ModelBundle

    loaded = load_base_model("default")
    registry = TaskRegistry.from_config([TaskConfig.model_validate(t) for t in task_configs()])
    mta = MTAConfig(expert="hydra_lora", num_experts=4, rank=8, lora_alpha=16.0)
    attach_mta(loaded.model, mta, registry)
    bundle = ModelBundle(loaded.model, loaded.tokenizer, registry, mta, loaded.ref)
    ck = tmp_path / "ck"
    write_adapter(begin(ck), loaded.model, checkpoint_meta(bundle, 1, 0))
    save_checkpoint_files(ck, 0)
    perturb_and_resign(ck, seed=3)
    base_dir = cache_root() / DEFAULT_CACHE_NAME
    task = registry.names[0]
    ref = alter_logits(ck, task)
    res = runner.invoke(app, ["export", str(ck), "--out", str(tmp_path / "p"), "--format", "peft", "--task", task])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p" / task / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_dir)
    d_peft = float((ref - peft_logits(base_dir, tmp_path / "p" / task)).abs().max())
    res = runner.invoke(app, ["export", str(ck), "--out", str(tmp_path / "m"), "--format", "merged", "--task", task])
    assert res.exit_code == 0, res.output
    d_merged = float((ref - merged_logits(tmp_path / "m")).abs().max())
    # float32: W + s·B A is stored rounded to float32 and evaluated in another order than W x + s·B(A x);
    # the merge itself is exact: in float64 (in memory) the merged model reproduces alter to rounding
    from alter_cli.export import merge_into_base, task_lora

    ck64 = load_checkpoint(ck)
    ck64.model.double()
    ids, mask = _inputs()
    with torch.no_grad():
        with task_context(ck64.model, registry.ids([task] * ids.shape[0])):
            ref64 = ck64.model(input_ids=ids, attention_mask=mask).logits
        merged64 = merge_into_base(ck64, task_lora(ck64, task))(input_ids=ids, attention_mask=mask).logits
    d_merged64 = float((ref64 - merged64).abs().max())
    print(f"SmolLM2 export: max |Δlogit| peft {d_peft:.2e}, merged {d_merged:.2e} (float64 {d_merged64:.2e}; "
          f"logit scale {float(ref.abs().max()):.1f})")
    assert d_peft < TOL, d_peft
    assert d_merged64 < 1e-9, d_merged64
    assert d_merged < 2e-4, d_merged
