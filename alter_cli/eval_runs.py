"""The run side of `alter eval` and of the evaluation after training: an evaluation accelerator,
one model scored on a data set with progress (`evaluate_source`), an eval source (checkpoint folder
or zero-shot) loaded and checked (`load_eval_source`), and the body of `alter eval` (`run_eval`:
each source loaded and scored -> one output folder). Split from `runs.py` (the training side).

Errors a user can cause are raised as one-line exceptions (CheckpointError, ConfigError, ...) that
`cli.py` reports with exit code 2; this module never exits the process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from .config import ConfigError, dump_config
from .outdir import MARKER, marker_text, provenance


def eval_accelerator() -> Any:
    """An Accelerator for evaluation (full precision; the process-wide state of a previous run cleared)."""
    from accelerate import Accelerator

    from .distributed import launched_on_cpu, launcher_env_kept, reset_accelerator_state

    reset_accelerator_state()
    with launcher_env_kept(False):  # evaluation is per process, on whole models: never FSDP
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


def load_eval_source(source: str, cfg: Any, first_meta: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
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


def run_eval(cfg: Any, sources: list[str], text: str, out: Path, overwrite: bool, state: Any) -> None:
    """Body of `alter eval`: each source loaded, checked, evaluated; outputs written by the main process."""
    import gc

    from rich.console import Console

    from .checkpoint import read_checkpoint_meta
    from .data import parse_jsonl
    from .metrics import constant_answers
    from .output import (
        eval_files,
        is_eval_folder,
        load_eval_folder,
        metrics_table,
        source_labels,
        write_folder,
    )

    labels = source_labels(sources)
    first_ckpt = next((s for s in sources if s != "zero-shot" and not is_eval_folder(s)), None)
    first_meta = read_checkpoint_meta(first_ckpt) if first_ckpt else None
    results, metas = {}, {}
    for source, label in zip(sources, labels, strict=True):
        if source != "zero-shot" and is_eval_folder(source):  # scored before: reuse, after checking the data
            f = cfg.data.fields
            try:
                rows = [(o[f.type], o[f.input], o[f.target]) for o in map(json.loads, filter(str.strip, text.splitlines()))]
                results[label], metas[label] = load_eval_folder(source, rows)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(str(exc) if isinstance(exc, ValueError) else f"data.eval: {exc!r}") from None
            continue
        bundle, meta = load_eval_source(source, cfg, first_meta)
        examples = parse_jsonl(text, cfg.data.eval, bundle.registry, cfg.data.fields)
        results[label] = evaluate_source(bundle.model, bundle.tokenizer, bundle.registry, examples, bundle.is_seq2seq,
                                         bundle.prompt_format, bundle.max_length, cfg.generation, label)
        metas[label] = meta | {"data": cfg.data.eval, "prompt_format": bundle.prompt_format,
                               "max_length": bundle.max_length}
        del bundle
        gc.collect()
    if state.is_main_process:
        files = eval_files(results, metas)
        files[MARKER] = marker_text("eval")
        files["resolved_config.yaml"] = dump_config(cfg)
        files["provenance.json"] = json.dumps(provenance() | {"sources": sources}, sort_keys=True, indent=2) + "\n"
        write_folder(out, files, overwrite=overwrite)
        Console(width=None if sys.stdout.isatty() else 160).print(metrics_table(results))
        for label, result in results.items():
            for task, answer, n in constant_answers(result):
                typer.echo(f"note: {label} answers {answer!r} to all {n} {task!r} examples: its {task} accuracy "
                           "is that label's share of the targets, not a sign of learning", err=True)
        typer.echo(f"wrote {out}")
