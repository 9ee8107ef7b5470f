"""`alter` command line (Typer): thin commands that resolve the config, call the core, write outputs.

Every error a user can cause is reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from . import __version__
from .config import AlterConfig, ConfigError, dump_config, relative_to, resolve_config
from .data import DataError, UnknownTaskError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ALTER: Mixture-of-Task-Adapters on small LMs.")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes reported as one line + exit 2 (imported lazily: torch is heavy)."""
    from .inject import InjectError
    from .models import ModelLoadError
    from .train import CheckpointError, TrainingError

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


def load_config(config: Path, overrides: list[str], model_cls: type = AlterConfig) -> Any:
    """Resolve defaults < YAML < --set; data paths are resolved relative to the config file."""
    cfg = resolve_config(read_text(config, "config"), str(config), overrides, model_cls)
    base = config.resolve().parent
    if getattr(cfg, "data", None) is not None:
        cfg.data.train = relative_to(cfg.data.train, base)
        cfg.data.eval = relative_to(cfg.data.eval, base)
    model = getattr(cfg, "model", None)
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
        return f"loss={loss:.4f} lr={rec['lr']:.2e} alpha_own[{alpha}]" + (f" {gate}" if gate else "")

    def __call__(self, rec: dict[str, Any]) -> None:
        if rec.get("log"):
            self.records.append({k: v for k, v in rec.items() if k not in ("log", "loss_micro")})
        if self.progress is not None:
            self.progress.update(self.task, completed=rec["step"], info=self.describe(rec))
        elif rec.get("log"):
            typer.echo(f"step {rec['step']}/{rec['max_steps']} {self.describe(rec)}")
            sys.stdout.flush()

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
              extra_provenance: dict[str, Any] | None = None, registry: Any = None) -> None:
    """Shared body of the train-stage commands: data, output folder, progress, core call, run files.

    registry: the task registry to parse the data with (default: from cfg.tasks; stage 2 passes the
    stage-1 checkpoint's). setup_model: see train.run_training."""
    from accelerate import PartialState

    from .data import TaskRegistry, parse_jsonl
    from .train import launched_on_cpu, run_training

    if not cfg.data.train:
        fail("config: data.train: required for training")
    if registry is None:
        registry = TaskRegistry.from_config(cfg.tasks)
    text = read_text(Path(cfg.data.train), "data.train")
    state = PartialState(cpu=launched_on_cpu())
    prepare_out_dir(out, resume, overwrite, state)
    examples = parse_jsonl(text, cfg.data.train, registry, cfg.data.fields)
    reporter = StepReporter(cfg.train.max_steps, sys.stdout.isatty() and state.is_main_process)
    try:
        result = run_training(cfg, stage, train_examples=examples, out_dir=out, resume=resume,
                              setup_model=setup_model, on_step=reporter)
    finally:
        reporter.close()
    if state.is_main_process:
        write_run_files(out, cfg, reporter.records, {"stage": stage, **(extra_provenance or {})})
        alpha = " ".join(f"{k}={v:.3f}" for k, v in result.alpha.items())
        typer.echo(f"stage {stage}: {result.steps} steps in {result.seconds:.1f} s on {result.num_processes} "
                   f"process(es), final loss "
                   f"{result.final_loss if result.final_loss is None else round(result.final_loss, 4)}; "
                   f"alpha_own [{alpha}]; checkpoint {out}")


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


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
