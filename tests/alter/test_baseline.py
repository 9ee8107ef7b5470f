"""`alter train-baseline`: the multi-task PEFT LoRA baseline on the tiny Llama-, GPT-2- and T5-style models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from alter_cli.baseline import build_baseline, ffn_projection_names, is_lora_param, plan_lora
from alter_cli.checkpoint import CheckpointError, load_checkpoint
from alter_cli.cli import app
from alter_cli.config import AlterConfig, LoRABaselineConfig
from alter_cli.data import TaskRegistry, parse_jsonl
from alter_cli.inject import attach_mta, set_trainable
from alter_cli.sources.synthetic import make_jsonl
from alter_cli.train import run_training

from .conftest import make_model, stage1_dict

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
GEN = ["--max-new-tokens", "5", "--batch-size", "4"]


def _registry(cfg: AlterConfig) -> TaskRegistry:
    return TaskRegistry.from_config(cfg.tasks)


@pytest.mark.parametrize(("arch", "names"), [
    ("llama", ["model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"]),
    ("gpt2", ["transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]),
    ("t5", ["encoder.block.1.layer.1.DenseReluDense.wi", "encoder.block.1.layer.1.DenseReluDense.wo",
            "decoder.block.1.layer.2.DenseReluDense.wi", "decoder.block.1.layer.2.DenseReluDense.wo"]),
])
def test_targets_are_the_ffn_projections_of_the_mta_blocks(arch, names, tiny_llama_dir, synthetic_jsonl):
    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl))
    if arch == "t5":
        cfg.mta.encoder_layers, cfg.mta.decoder_layers = [-1], [-1]
    else:
        cfg.mta.layers = [-1]
    assert ffn_projection_names(make_model(arch), cfg.mta) == names


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("expert", ["bottleneck", "lora"])
def test_matched_rank_is_within_10_percent_of_the_mta_count(arch, expert, tiny_llama_dir, synthetic_jsonl):
    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl))
    cfg.mta.expert = expert
    registry = _registry(cfg)
    plan = plan_lora(make_model(arch), cfg.mta, registry, LoRABaselineConfig())
    # the MTA count of the plan is what train-stage1 really trains
    real = make_model(arch)
    attach_mta(real, cfg.mta, registry)
    assert plan.mta_parameters == set_trainable(real, 1)
    # closed form of the rank: per_rank = Σ (d_in + d_out) over the adapted projections
    assert plan.rank == max(1, round(plan.mta_parameters / plan.per_rank))
    assert abs(plan.relative_difference) <= 0.10
    assert plan.alpha == 2 * plan.rank


def test_only_lora_params_train_and_count_matches_plan(tiny_llama_dir, synthetic_jsonl, tmp_path):
    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=3, learning_rate=3e-2))
    bundle, plan = build_baseline(cfg)
    before = {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}
    n = bundle.adapter.set_trainable(bundle.model)
    assert n == plan.lora_parameters
    assert abs(n - plan.mta_parameters) <= 0.10 * plan.mta_parameters
    trainable = [k for k, p in bundle.model.named_parameters() if p.requires_grad]
    assert trainable and all(is_lora_param(k) for k in trainable)
    assert len(trainable) == 2 * len(plan.target_modules)  # lora_A and lora_B per projection

    result = run_training(cfg, 0, train_examples=parse_jsonl(synthetic_jsonl.read_text(), "t", bundle.registry),
                          out_dir=tmp_path / "lora", setup_model=lambda c: bundle)
    assert result.steps == 3
    after = bundle.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(is_lora_param(k) for k in changed)  # the backbone is bitwise unchanged
    assert any(".lora_B." in k for k in changed)  # B starts at zero: it moved, so the adapter is active
    files = {p.name for p in (tmp_path / "lora").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "alter_baseline.json", "state"} <= files
    peft_cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == plan.rank
    assert sorted(peft_cfg["target_modules"]) == sorted(plan.target_modules)


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir, synthetic_jsonl, tmp_path_factory) -> dict[str, Path]:
    """A baseline trained through the CLI with evaluation at the end of training."""
    root = tmp_path_factory.mktemp("lora")
    eval_data = root / "eval.jsonl"
    eval_data.write_text(make_jsonl(2, seed=11))
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=4, learning_rate=3e-2)
    d["data"]["eval"] = str(eval_data)
    d["generation"] = {"batch_size": 4, "max_new_tokens": 5}
    (root / "cfg.yaml").write_text(yaml.safe_dump(d))
    res = runner.invoke(app, ["train-baseline", str(root / "cfg.yaml"), "--out", str(root / "lora")])
    assert res.exit_code == 0, res.output
    assert "lora baseline: rank" in res.stdout and "MTA stage 1 with the same mta section" in res.stdout
    assert "eval: macro average" in res.stdout
    assert "lora baseline: 4 steps" in res.stdout and "loss=" in res.stdout and "alpha_own" not in res.stdout
    return {"root": root, "lora": root / "lora", "eval": eval_data, "cfg": root / "cfg.yaml"}


def test_save_then_eval_in_fresh_process_gives_the_same_numbers(lora_run, tmp_path):
    out = tmp_path / "e"
    proc = subprocess.run(
        [sys.executable, "-m", "alter_cli", "eval", "--checkpoint", str(lora_run["lora"]), "--data",
         str(lora_run["eval"]), "--out", str(out), *GEN],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    trained = json.loads((lora_run["lora"] / "eval" / "metrics.json").read_text())
    fresh = json.loads((out / "metrics.json").read_text())
    assert fresh["tasks"] == trained["tasks"] and fresh["macro_average"] == trained["macro_average"]
    assert (out / "predictions.jsonl").read_text() == (lora_run["lora"] / "eval" / "predictions.jsonl").read_text()


def test_reloaded_baseline_has_the_trained_logits_and_differs_from_base(lora_run, tiny_llama_dir):
    ck = load_checkpoint(lora_run["lora"])
    assert ck.stage == 0 and ck.mta_config is None and ck.meta["method"] == "lora"
    assert all(not p.requires_grad for p in ck.model.parameters())
    ids = torch.tensor([[5, 9, 12, 7, 30, 8]])
    from alter_cli.models import load_base_model

    plain = load_base_model(str(tiny_llama_dir)).model.eval()
    with torch.no_grad():
        a, b = ck.model(input_ids=ids).logits, ck.model(input_ids=ids).logits
        c = plain(input_ids=ids).logits
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # the PEFT adapter folder is usable by PEFT itself (its own format)
    from peft import PeftModel

    from alter_cli.quiet import peft_quietly

    with peft_quietly():  # PEFT reads transformers' deprecated is_gradient_checkpointing (a FutureWarning)
        peft_model = PeftModel.from_pretrained(load_base_model(str(tiny_llama_dir)).model.eval(),
                                               str(lora_run["lora"]))
    with torch.no_grad():
        assert torch.equal(peft_model(input_ids=ids).logits, a)


def test_eval_compare_mixes_baseline_mta_and_zero_shot(lora_run, synthetic_jsonl, tiny_llama_dir, tmp_path):
    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=2))
    run_training(cfg, 1, train_examples=parse_jsonl(synthetic_jsonl.read_text(), "t", _registry(cfg)),
                 out_dir=tmp_path / "s1")
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["eval", "--checkpoint", str(lora_run["lora"]), "--compare", str(tmp_path / "s1"),
                              "--zero-shot", "--data", str(lora_run["eval"]), "--out", str(out), *GEN])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary) == {"lora", "s1", "zero-shot"}
    assert summary["lora"]["source"]["stage"] == 0
    assert summary["lora"]["macro_average"] == json.loads(
        (lora_run["lora"] / "eval" / "metrics.json").read_text())["macro_average"]


def test_baseline_errors_are_one_line(lora_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(lora_run["lora"], bad)
    (bad / "adapter_model.safetensors").write_bytes(b"not safetensors")
    res = runner.invoke(app, ["eval", "--checkpoint", str(bad), "--data", str(lora_run["eval"]),
                              "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "adapter_model.safetensors does not belong to step" in res.stderr  # named by the manifest
    (bad / "checkpoint_manifest.json").unlink()  # the loader's own check (a checkpoint of before manifests)
    res = runner.invoke(app, ["eval", "--checkpoint", str(bad), "--data", str(lora_run["eval"]),
                              "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "cannot load the PEFT adapter" in res.stderr
    (bad / "alter_baseline.json").write_text("{")
    res = runner.invoke(app, ["eval", "--checkpoint", str(bad), "--data", str(lora_run["eval"]),
                              "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "alter_baseline.json is not valid JSON" in res.stderr
    s2 = tmp_path / "s2.yaml"
    s2.write_text(yaml.safe_dump({"stage1": str(lora_run["lora"]), "data": {"train": str(lora_run["eval"])}}))
    res = runner.invoke(app, ["train-stage2", str(s2), "--out", str(tmp_path / "s2")])
    assert res.exit_code == 2 and "is a LoRA baseline" in res.stderr, res.output
    res = runner.invoke(app, ["train-baseline", str(lora_run["cfg"]), "--out", str(tmp_path / "x"),
                              "--set", "lora.rank=0"])
    assert res.exit_code == 2 and "lora.rank" in res.stderr


def test_shipped_compare_config_loads_for_both_methods():
    text = (ROOT / "configs/alter/bbc-compare-train.yaml").read_text()
    from alter_cli.config import resolve_config

    cfg = resolve_config(text, "bbc-compare-train.yaml")
    assert cfg.lora.rank is None and [t.name for t in cfg.tasks] == ["topic", "headline", "match"]


def test_shipped_compare_configs_chain_one_run_folder():
    """data -> stage1 / lora -> stage2 -> eval all point into runs/compare."""
    from alter_cli.cli import _eval_config, load_config
    from alter_cli.config import Stage2Config

    run = (ROOT / "runs" / "compare").resolve()
    alter_dir = ROOT / "configs" / "alter"
    s1 = load_config(alter_dir / "bbc-compare-train.yaml", [])
    s2 = load_config(alter_dir / "bbc-compare-stage2.yaml", [], Stage2Config)
    ev = _eval_config(alter_dir / "bbc-compare-eval.yaml", [], {})
    assert Path(s1.data.train).resolve() == Path(s2.data.train).resolve() == run / "data" / "train.jsonl"
    assert (alter_dir / s2.stage1).resolve() == run / "stage1"
    assert s2.mta.gate_combine == "residual" and s2.train.learning_rate == s1.train.learning_rate
    assert s2.mta.gate_task == "bias" and s1.mta.expert == "hydra_lora"
    assert Path(ev.checkpoint).resolve() == run / "stage2"
    assert [c if c == "zero-shot" else Path(c).resolve() for c in ev.compare] == [
        run / "stage1", run / "lora", "zero-shot"]
    assert Path(ev.data.eval).resolve() == run / "data" / "test.jsonl" and ev.generation.label_match == "search"


def test_resumed_baseline_ends_with_same_weights_as_uninterrupted(tiny_llama_dir, synthetic_jsonl, tmp_path):
    from safetensors.torch import load_file

    cfg = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=4,
                                                 gradient_accumulation_steps=2, learning_rate=1e-2))
    ex = parse_jsonl(synthetic_jsonl.read_text(), "t", _registry(cfg))

    def setup(c):
        return build_baseline(c)[0]

    run_training(cfg, 0, train_examples=ex, out_dir=tmp_path / "full", setup_model=setup)
    part = run_training(cfg, 0, train_examples=ex, out_dir=tmp_path / "part", setup_model=setup, stop_after=2)
    assert part.steps == 2
    mid = load_file(str(tmp_path / "part" / "adapter_model.safetensors"))
    # --resume with another LoRA setting or a damaged state/ is refused before anything is touched
    other = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"rank": 3})})
    with pytest.raises(CheckpointError, match=r"another LoRA setting: rank was \d+, now 3"):
        run_training(other, 0, train_examples=ex, out_dir=tmp_path / "part", setup_model=setup, resume=True)
    rng = tmp_path / "part" / "state" / "random_states_0.pkl"
    saved_rng = rng.read_bytes()
    rng.unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        run_training(cfg, 0, train_examples=ex, out_dir=tmp_path / "part", setup_model=setup, resume=True)
    rng.write_bytes(saved_rng)
    assert load_file(str(tmp_path / "part" / "adapter_model.safetensors")).keys() == mid.keys()
    res = run_training(cfg, 0, train_examples=ex, out_dir=tmp_path / "part", setup_model=setup, resume=True)
    assert res.steps == 4
    full = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "part" / "adapter_model.safetensors"))
    assert full.keys() == resumed.keys() and full
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert any(not torch.equal(mid[k], full[k]) for k in full)  # the resumed half did train
