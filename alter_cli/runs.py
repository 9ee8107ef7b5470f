"""The run side of `alter`'s commands: reading user files, the output folder (--overwrite, --resume),
progress lines, train_log.jsonl / resolved_config.yaml / provenance.json, and the body shared by the
training commands (`run_stage`: data -> `train.run_training` -> run files -> optional evaluation).
The body of `alter eval` and the evaluation itself are `eval_runs.py`.

Errors a user can cause are raised as one-line exceptions (InputFileError, OutputFolderError,
ConfigError, ...) that `cli.py` reports with exit code 2; this module never exits the process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from .config import ConfigError, dump_config
from .outdir import (  # noqa: F401  (provenance: re-exported, its old home)
    OutLock,
    OutputFolderError,
    check_replaceable,
    clear_folder,
    is_empty_dir,
    output_kind,
    provenance,
    remove_if_unused,
    write_marker,
)


class InputFileError(ValueError):
    """A user file (config, data) that is missing or unreadable."""


def read_user_text(path: Path, what: str) -> str:
    """Read a user file (UTF-8, a leading byte-order mark is dropped). Raises InputFileError (missing,
    a folder, unreadable) with a one-line message."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputFileError(f"{what} {str(path)!r}: file not found") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} {str(path)!r}: is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{what} {str(path)!r}: cannot read ({exc.__class__.__name__})") from None


def prepare_out_dir(out: Path, resume: bool, overwrite: bool, state: Any) -> OutLock | None:
    """Check and take the output folder of a training run; returns the lock the main process holds
    (None on other ranks) for the caller to release at the end.

    A non-empty `out` is refused unless --resume (then an interrupted save is recovered) or
    --overwrite (then its contents are removed; only an earlier alter training run, see
    outdir.check_replaceable). A folder that cannot be created, or one another run holds (the lock),
    is refused here, before any training. Raises OutputFolderError."""
    exists = (out.exists() or out.is_symlink()) and not is_empty_dir(out)
    if exists and not (resume or overwrite):
        raise OutputFolderError(f"output folder {str(out)!r} exists (use --overwrite to replace it or --resume to continue)")
    if exists and overwrite and not resume:
        check_replaceable(out, "train")
    if resume and exists and (out.is_symlink() or not out.is_dir()):
        raise OutputFolderError(f"--resume: {str(out)!r} is not a folder")
    if resume and not (output_kind(out) == "train" or any((out / n).is_dir() for n in (".checkpoint-new", ".state-old"))):
        raise OutputFolderError(f"--resume: {str(out)!r} holds no checkpoint state")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(prefix=f".{out.name}.probe-", dir=parent).cleanup()
    except OSError as exc:
        raise OutputFolderError(f"output folder {str(out)!r}: cannot write in {str(parent)!r} "
                                f"({exc.strerror or exc.__class__.__name__})") from None
    lock, error = None, None
    if state.is_main_process:
        try:
            lock = OutLock(out).acquire()
            if resume:
                from .checkpoint import recover_checkpoint

                if (done := recover_checkpoint(out)) is not None:
                    typer.echo(f"alter: {done} in {str(out)!r}", err=True)
            elif overwrite and exists:
                clear_folder(out)
            write_marker(out, "train")  # (a resumed run of before markers gets one too)
        except (OutputFolderError, ValueError, OSError) as exc:
            if lock is not None:
                lock.release()
            error = str(exc) if isinstance(exc, ValueError) else f"output folder {str(out)!r}: {exc}"
    error = _agree(state, error)
    if error is not None:
        raise OutputFolderError(error)
    if resume and not (out / "state").is_dir():
        if lock is not None:
            lock.release()
        raise OutputFolderError(f"--resume: {str(out)!r} holds no checkpoint state")
    return lock


def _agree(state: Any, value: Any) -> Any:
    """The main process's `value` on every rank (a barrier when single-process)."""
    if getattr(state, "num_processes", 1) > 1:
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]
    state.wait_for_everyone()
    return value


def probe_out_parent(out: Path) -> None:
    """The folder that will hold `out` can be created and written; OutputFolderError otherwise (e.g.
    `--out file.txt/run` under a regular file, a read-only folder), before any evaluation."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(prefix=f".{out.name}.probe-", dir=parent).cleanup()
    except OSError as exc:
        raise OutputFolderError(f"output folder {str(out)!r}: cannot write in {str(parent)!r} "
                                f"({exc.strerror or exc.__class__.__name__})") from None


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null (after the reader of a pipe has gone), so that later
    prints and the interpreter's exit-time flush do not fail with BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


TRAIN_LOG = "train_log.jsonl"


def read_log_records(path: Path) -> list[dict[str, Any]]:
    """The records of a train_log.jsonl; a last line cut by a kill (not valid JSON) is dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    records = []
    for line in text.split("\n"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
    return records


class TrainLog:
    """train_log.jsonl, one JSON record per logged step, appended and flushed as training goes (so a
    Ctrl-C, SIGTERM or kill keeps every step logged so far). `start(resume, step)` (main process):
    a fresh run starts an empty log; a resumed one keeps the records up to the checkpoint's `step`
    and drops those after it (they are trained again), rewritten by tmp + rename, never left empty."""

    def __init__(self, path: Path):
        self.path = path
        self._file: Any = None
        self._fresh = True

    def start(self, resume: bool, step: int | None = None) -> None:
        if not resume:
            self._fresh = True
            return
        kept = [r for r in read_log_records(self.path) if step is None or r["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self._fresh = False

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w" if self._fresh else "a", encoding="utf-8")
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StepReporter:
    """Progress: a rich bar (loss + per-task selector weights) on a TTY, a plain line per log step
    otherwise; every logged step is also appended to `log` (train_log.jsonl) as it happens."""

    def __init__(self, total: int, tty: bool, log: TrainLog | None = None):
        self.log = log
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
        if rec.get("log") and self.log is not None:
            self.log.append({k: v for k, v in rec.items() if k not in ("log", "loss_micro")})
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


def write_run_files(out: Path, cfg: Any, extra: dict[str, Any]) -> None:
    """resolved_config.yaml and provenance.json next to the checkpoint (each tmp + rename)."""
    files = {
        "resolved_config.yaml": dump_config(cfg),
        "provenance.json": json.dumps({**provenance(), **extra}, sort_keys=True, indent=2) + "\n",
    }
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def run_stage(cfg: Any, stage: int, out: Path, resume: bool, overwrite: bool, setup_model: Any = None,
              extra_provenance: dict[str, Any] | None = None, registry: Any = None, extra_loss: Any = None,
              on_record: Any = None, only_task: str | None = None) -> None:
    """Shared body of the train-stage commands: data, output folder, progress, core call, run files.
    only_task: train on the examples of this task alone (per-task LoRA, `train_per_task`).

    registry: the task registry to parse the data with (default: from cfg.tasks; stage 2 passes the
    stage-1 checkpoint's). setup_model, extra_loss: see train.run_training. on_record(record) may add
    to each step record before it is reported (stage-2 gate statistics). With cfg.data.eval set, the
    trained model is evaluated at the end (outputs in `<out>/eval/`, as `alter eval` writes them)."""
    from accelerate import PartialState

    from .data import TaskRegistry, parse_jsonl
    from .distributed import launched_on_cpu
    from .train import build_stage1, run_training

    if not cfg.data.train:
        raise ConfigError("config: data.train: required for training")
    if registry is None:
        registry = TaskRegistry.from_config(cfg.tasks)
    text = read_user_text(Path(cfg.data.train), "data.train")
    eval_text = read_user_text(Path(cfg.data.eval), "data.eval") if cfg.data.eval else None
    state = PartialState(cpu=launched_on_cpu())
    lock = prepare_out_dir(out, resume, overwrite, state)
    try:
        examples = parse_jsonl(text, cfg.data.train, registry, cfg.data.fields)
        if only_task is not None:
            examples = [ex for ex in examples if ex.task == only_task]
            if not examples:
                raise ConfigError(f"data.train {cfg.data.train!r}: no examples of task {only_task!r}")
        eval_examples = parse_jsonl(eval_text, cfg.data.eval, registry, cfg.data.fields) if eval_text else None
        log = TrainLog(out / TRAIN_LOG)
        if state.is_main_process:
            from .checkpoint import checkpoint_step

            log.start(resume, checkpoint_step(out) if resume else None)
        reporter = StepReporter(cfg.train.max_steps, sys.stdout.isatty() and state.is_main_process, log)
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
            log.close()
        if state.is_main_process:
            write_run_files(out, cfg, {"stage": stage, **(extra_provenance or {})})
            alpha = " ".join(f"{k}={v:.3f}" for k, v in result.alpha.items())
            typer.echo(f"{'lora baseline' if stage == 0 else f'stage {stage}'}: {result.steps} steps in {result.seconds:.1f} s on {result.num_processes} "
                       f"process(es), final loss "
                       f"{result.final_loss if result.final_loss is None else round(result.final_loss, 4)}; "
                       + (f"alpha_own [{alpha}]; " if alpha else "") + f"checkpoint {out}")
        if eval_examples is not None:
            from .eval_runs import evaluate_source

            bundle = built["bundle"]
            if result.sharded:  # FSDP: each process holds shards; score the checkpoint, whole, on every process
                from .checkpoint import load_checkpoint

                bundle = load_checkpoint(out)
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
    finally:
        if lock is not None:
            remove_if_unused(out)  # a run that failed before writing anything leaves no folder
            lock.release()


def train_per_task(cfg: Any, out: Path, resume: bool, overwrite: bool, setup: Any) -> None:
    """`train-baseline --per-task`: adapters/<task>/ one LoRA baseline run per task on that task's
    examples (the same config, steps and seed), then alter_baseline.json naming them (per_task module)."""
    from accelerate import PartialState

    from .baseline import write_per_task_meta
    from .data import TaskRegistry
    from .distributed import launched_on_cpu
    from .per_task import ADAPTERS_DIR, adapter_name

    registry = TaskRegistry.from_config(cfg.tasks)
    state = PartialState(cpu=launched_on_cpu())
    lock = None
    if not resume:
        lock = prepare_out_dir(out, False, overwrite, state)
    elif not (out / "resolved_config.yaml").is_file():
        raise OutputFolderError(f"--resume: {str(out)!r} holds no per-task LoRA run")
    elif state.is_main_process:
        lock = OutLock(out).acquire()  # the whole per-task run, while each task's run locks its own folder
    try:
        if cfg.data.eval:
            typer.echo(f"per-task LoRA: data.eval is not scored during training; use alter eval --checkpoint {out}")
        sub_cfg = cfg.model_copy(deep=True)
        sub_cfg.data.eval = None
        if state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "resolved_config.yaml").write_text(dump_config(cfg))
        for task in registry.names:
            sub = out / ADAPTERS_DIR / adapter_name(task)
            typer.echo(f"per-task LoRA: task {task} -> {sub}")
            run_stage(sub_cfg, 0, sub, resume and (sub / "state").is_dir(), False, setup_model=setup,
                      extra_provenance={"method": "lora_per_task", "task": task}, only_task=task)
        if state.is_main_process:
            meta = write_per_task_meta(out, registry)
            typer.echo(f"per-task LoRA: {len(registry.names)} adapters x {meta['lora_parameters_per_adapter']:,} = "
                       f"{meta['lora_parameters']:,} trainable parameters "
                       f"({meta['lora_parameters'] / meta['mta_parameters']:.1f}x MTA stage 1's "
                       f"{meta['mta_parameters']:,}); checkpoint {out}")
    finally:
        if lock is not None:
            lock.release()
