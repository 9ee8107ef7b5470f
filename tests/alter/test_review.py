"""Regressions found by the review of `alter train-stage1` (resume safety, trained backbone kept)."""

import shutil
from pathlib import Path

import pytest
import torch

from alter_cli.checkpoint import BACKBONE_WEIGHTS, CheckpointError, load_checkpoint
from alter_cli.config import AlterConfig
from alter_cli.data import TaskRegistry, parse_jsonl
from alter_cli.train import build_stage1, run_training

from .conftest import stage1_dict


def _cfg(model_dir, data, mta=None, **train):
    d = stage1_dict(model_dir, data, **train)
    d["mta"].update(mta or {})
    return AlterConfig.model_validate(d)


def _examples(cfg):
    return parse_jsonl(Path(cfg.data.train).read_text(), cfg.data.train, TaskRegistry.from_config(cfg.tasks))


def test_trained_backbone_is_saved_reloaded_and_resumed(tiny_llama_dir, synthetic_jsonl, tmp_path):
    """unfreeze_backbone used to train the backbone and then drop it from the checkpoint and the
    resume state: the reloaded model was base + MTA, not the trained model."""
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, max_steps=4, learning_rate=1e-2, unfreeze_backbone=True)
    captured = {}

    def setup(c):
        captured["b"] = build_stage1(c)
        return captured["b"]

    out = tmp_path / "full"
    run_training(cfg, 1, train_examples=_examples(cfg), out_dir=out, setup_model=setup)
    trained = {k: v.detach().clone() for k, v in captured["b"].model.state_dict().items()}
    base = build_stage1(cfg).model.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[name], base[name])  # the backbone did train
    assert (out / BACKBONE_WEIGHTS).is_file()
    # safetensors writes 0600; checkpoint files get the mode of a normal file (shared checkpoints)
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    for f in ("adapter_model.safetensors", BACKBONE_WEIGHTS, "state/model.safetensors"):
        assert (out / f).stat().st_mode & 0o777 == 0o666 & ~mask, f
    reloaded = load_checkpoint(out).model.state_dict()
    assert reloaded.keys() == trained.keys()
    for k in trained:
        assert torch.equal(reloaded[k], trained[k]), k
    # resume: interrupted after 2 steps, continued to 4, ends on the uninterrupted backbone
    run_training(cfg, 1, train_examples=_examples(cfg), out_dir=tmp_path / "part", stop_after=2)
    run_training(cfg, 1, train_examples=_examples(cfg), out_dir=tmp_path / "part", resume=True)
    resumed = load_checkpoint(tmp_path / "part").model.state_dict()
    assert torch.equal(resumed[name], trained[name])


def test_resume_refuses_other_config_and_corrupt_state(tiny_llama_dir, synthetic_jsonl, tmp_path):
    """--resume with another MTA config, task list or base model, or a damaged state/, used to end in
    a torch traceback (or to run on silently); now a CheckpointError naming the difference."""
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, max_steps=4)
    good = tmp_path / "good"
    run_training(cfg, 1, train_examples=_examples(cfg), out_dir=good, stop_after=1)

    def attempt(name, cfg2, damage=None):
        out = tmp_path / name
        shutil.copytree(good, out)
        if damage:
            damage(out)
        with pytest.raises(CheckpointError) as err:
            run_training(cfg2, 1, train_examples=_examples(cfg2), out_dir=out, resume=True)
        return str(err.value)

    assert "mta.rank was 8, now 4" in attempt("rank", _cfg(tiny_llama_dir, synthetic_jsonl, {"rank": 4}, max_steps=4))
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=4)
    d["tasks"] = d["tasks"][::-1]
    assert "task registry" in attempt("tasks", AlterConfig.model_validate(d))
    assert "incomplete (missing optimizer.bin)" in attempt(
        "noopt", cfg, lambda o: (o / "state" / "optimizer.bin").unlink())
    assert "state/custom_checkpoint_0.pkl does not belong to step 1" in attempt(
        "badpkl", cfg, lambda o: (o / "state" / "custom_checkpoint_0.pkl").write_bytes(b"garbage"))
    assert "corrupt accelerate state" in attempt(  # a checkpoint of before manifests: accelerate's own read fails
        "badpkl-old", cfg, lambda o: ((o / "state" / "custom_checkpoint_0.pkl").write_bytes(b"garbage"),
                                      (o / "checkpoint_manifest.json").unlink()))
    assert "not valid JSON" in attempt("badjson", cfg, lambda o: (o / "adapter_config.json").write_text("{"))


def test_sigint_during_checkpoint_swap_is_delivered_after_it():
    import os
    import signal

    from alter_cli.checkpoint import defer_sigint

    # A shell without job control (CI, nohup, cron) may start us with SIGINT ignored: install
    # Python's own handler for this test and put the inherited one back afterwards.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with defer_sigint():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("swap finished")
        assert done == ["swap finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_interrupted_training_names_the_checkpoint_to_resume(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from alter_cli import cli, runs

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run_stage", boom)
    monkeypatch.setattr(cli, "quiet_libraries", lambda: None)
    cfg = Path(__file__).resolve().parents[2] / "configs" / "alter" / "stage1.yaml"
    out = tmp_path / "run"
    res = CliRunner().invoke(cli.app, ["train-stage1", str(cfg), "--out", str(out)])
    assert res.exit_code == 130 and "no checkpoint was written yet" in res.stderr
    out.mkdir()
    (out / "adapter_config.json").write_text('{"step": 12}')
    res = CliRunner().invoke(cli.app, ["train-stage1", str(cfg), "--out", str(out)])
    assert res.exit_code == 130
    assert res.stderr.strip() == f"alter: interrupted; last checkpoint: step 12 in {str(out)!r} (continue with --resume)"


@pytest.mark.parametrize("override, message", [
    ("train.max_steps=true", "config: train.max_steps: expected a number, got true"),
    ("mta.temperature=false", "config: mta.temperature: expected a number, got false"),
    ("mta.task_to_experts={nope: [0]}", "config: mta.task_to_experts names unknown task 'nope'"),
])
def test_config_messages_booleans_and_root_errors(override, message):
    """`max_steps: true` used to run 1 step (pydantic lax bool -> int); root errors read
    'config: <root>: Value error, ...'."""
    from alter_cli.config import ConfigError, resolve_config

    text = (Path(__file__).resolve().parents[2] / "configs" / "alter" / "stage1.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        resolve_config(text, "c.yaml", [override])
    assert str(err.value) == f"c.yaml: {message}"


def test_empty_layer_list_is_named():
    """mta.layers: [] used to end in 'no trainable parameters' after loading everything."""
    from alter_cli.config import MTAConfig
    from alter_cli.inject import InjectError, attach_mta
    from alter_cli.sources.synthetic import task_configs

    from .conftest import make_model

    registry = TaskRegistry.from_config(AlterConfig.model_validate({"tasks": task_configs()}).tasks)
    with pytest.raises(InjectError, match=r"mta: the layer lists \(layers\) select no block"):
        attach_mta(make_model("llama"), MTAConfig(layers=[]), registry)
    with pytest.raises(InjectError, match="select no block"):
        attach_mta(make_model("t5"), MTAConfig(encoder_layers=[], decoder_layers=[]), registry)
    assert len(attach_mta(make_model("t5"), MTAConfig(encoder_layers=[], rank=4), registry)) == 1


def test_overwrite_keeps_folders_that_are_not_runs_and_unwritable_out_is_refused_early(tmp_path):
    """`--out . --overwrite` used to delete the current folder; an --out under a file failed with a
    traceback at the first checkpoint, after the training."""
    from typer.testing import CliRunner

    from alter_cli.cli import app

    cfg = Path(__file__).resolve().parents[2] / "configs" / "alter" / "stage1.yaml"
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    runner = CliRunner()
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(precious), "--overwrite"])
    assert res.exit_code == 2 and res.stderr.strip() == (
        f"alter: error: --overwrite: {str(precious)!r} is not an alter output (no .alter-output); not deleting it")
    assert (precious / "thesis.tex").read_text() == "years of work"
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = runner.invoke(app, ["train-stage1", str(cfg), "--out", str(blocker / "run")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"cannot write in {str(blocker)!r}" in res.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "resolved_config.yaml").write_text("old")
    from alter_cli.runs import prepare_out_dir

    class _Main:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    prepare_out_dir(run, resume=False, overwrite=True, state=_Main()).release()
    assert [p.name for p in run.iterdir() if p.name not in (".alter.lock", ".alter-output")] == []  # replaced


def test_data_file_with_byte_order_mark(tmp_path):
    """JSONL saved with a UTF-8 BOM (spreadsheet exports) used to fail as 'malformed JSON' on line 1."""
    from alter_cli.cli import read_text
    from alter_cli.sources.synthetic import make_jsonl, task_configs

    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + make_jsonl(4, seed=3).encode())
    registry = TaskRegistry.from_config(AlterConfig.model_validate({"tasks": task_configs()}).tasks)
    assert len(parse_jsonl(read_text(p, "data.train"), str(p), registry)) == 4 * len(registry)


def test_resuming_a_finished_run_keeps_its_log(tmp_path):
    """write_run_files used to replace train_log.jsonl by an empty file when a resumed run had no
    step left (records == []); the log is now appended as training goes (TrainLog)."""
    import json

    from alter_cli.runs import TrainLog

    path = tmp_path / "train_log.jsonl"
    old = [{"step": 4, "loss": 2.0}, {"step": 8, "loss": 1.5}]
    log = TrainLog(path)
    log.start(resume=False)
    for r in old:
        log.append(r)
    log.close()
    TrainLog(path).start(resume=True, step=8)  # a resumed run with no step left to train
    assert [json.loads(x) for x in path.read_text().splitlines()] == old
    log = TrainLog(path)
    log.start(resume=True, step=4)  # resumed from the checkpoint of step 4: step 8 is trained again
    for r in ({"step": 8, "loss": 1.25}, {"step": 12, "loss": 1.0}):
        log.append(r)
    log.close()
    steps = [json.loads(x) for x in path.read_text().splitlines()]
    assert steps == [old[0], {"step": 8, "loss": 1.25}, {"step": 12, "loss": 1.0}]


def test_chat_prompt_format_without_template_or_with_t5_is_a_data_error():
    """prompt_format: chat with a tokenizer lacking a chat template ended in a ValueError traceback;
    with T5 it was silently ignored."""
    from alter_cli.data import DataError, prompt_ids

    from .conftest import make_tokenizer

    plain = make_tokenizer("causal")
    plain.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        prompt_ids(plain, "abc", False, "chat")
    assert prompt_ids(plain, "abc", False, "auto") == prompt_ids(plain, "abc", False, "plain")
    with pytest.raises(DataError, match="T5"):
        prompt_ids(make_tokenizer("seq2seq"), "abc", True, "chat")


def test_set_paths_are_read_from_the_current_folder(tmp_path, monkeypatch):
    """`--set data.train=mine.jsonl` used to be read from the config file's folder, not from where
    the user typed it; paths written in the YAML still are."""
    from alter_cli.cli import load_config

    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "c.yaml").write_text("tasks: [{name: copy, kind: generate}]\ndata: {train: in_yaml.jsonl}\n")
    work = tmp_path / "work"
    (work / "tiny").mkdir(parents=True)
    monkeypatch.chdir(work)
    cfg = load_config(cfg_dir / "c.yaml", ["data.eval=mine.jsonl", "model.name=tiny"])
    assert cfg.data.train == str(cfg_dir / "in_yaml.jsonl")
    assert cfg.data.eval == str(work / "mine.jsonl")
    assert cfg.model.name == str(work / "tiny")


def test_default_model_cache_drops_gguf_quantization_config(tmp_path, monkeypatch):
    """The dequantised float32 cache must not keep GGUF's quantization_config (the reloaded
    model would claim is_quantized=True); the base-model hash ignores that key."""
    import json

    from alter_cli import models

    from .conftest import make_model, make_tokenizer

    model, tok = make_model("llama"), make_tokenizer("causal")
    plain_hash = models.config_hash(model.config)
    model.config.quantization_config = {"quant_method": "gguf"}
    assert models.config_hash(model.config) == plain_hash
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(models, "embedded_gguf_path", lambda: tmp_path / "x.gguf")
    monkeypatch.setattr(models, "_load_pretrained", lambda *a, **k: (model, tok))
    target = models._default_cached_dir()
    cfg = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (target / "model.safetensors").is_file()


def test_gguf_conversion_bar_is_silenced_off_a_terminal(monkeypatch):
    """transformers' GGUF de-quantisation draws a plain tqdm bar (one endless \\r-line in a log):
    off a terminal _load_pretrained silences it for the load only."""
    import io
    import sys

    import transformers
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import LlamaConfig

    from alter_cli import models

    err = io.StringIO()
    original = gguf_utils.tqdm

    class FakeAuto:
        @staticmethod
        def from_pretrained(*a, **k):
            for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...", file=err):
                pass
            return "model"

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: LlamaConfig())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: "tok")
    monkeypatch.setattr(models, "_auto_classes", lambda model_type: FakeAuto)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert models._load_pretrained("/some/dir", "m.gguf", "model") == ("model", "tok")
    assert err.getvalue() == "" and gguf_utils.tqdm is original  # silent, and restored
    models._load_pretrained("/some/dir", None, "model")  # a plain folder: bars left alone
    assert "de-quantizing" in err.getvalue()
