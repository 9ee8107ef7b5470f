"""The accelerate training loop shared by both stages (and the LoRA baseline), and resume.

One loop for every device (spec section 4): `Accelerator.prepare`, `accumulate`, `save_state` /
`load_state` (model MTA weights, optimizer, scheduler, RNG, progress) and `skip_first_batches`, so
`accelerate launch` runs it unchanged with several processes, DDP or FSDP2 (the accelerator set-up,
FSDP's wrap units and its full-state checkpoints: `distributed.py`). The checkpoint format (what a
save writes, what a resume checks and loads) is `checkpoint.py`; it is the same under FSDP.

DDP and tasks missing from a micro-batch: every selector is one (T, E) parameter whose softmax is
computed for all T rows before the batch's rows are indexed, and every expert runs on every token,
so each trainable parameter takes part in every backward (rows of absent tasks get exact zero
gradients). DDP therefore runs with find_unused_parameters=False (no extra graph traversal each step).
"""

from __future__ import annotations

import contextlib
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import swap
from .checkpoint import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    STATE_DIR,
    CheckpointError,
    check_resumable,
    check_same_step,
    check_state_complete,
    checkpoint_meta,
    load_backbone_weights,
    load_mta_weights,
    recover_checkpoint,
    save_checkpoint_files,
    trained_backbone_names,
    write_adapter,
)
from .config import MTAConfig
from .data import Collator, Example, TaskBalancedSampler, TaskRegistry, encode_dataset
from .distributed import (  # noqa: F401  (TrainingError, launched_on_cpu: re-exported, their old home)
    StopSignals,
    TrainingError,
    agreed_stop,
    full_state,
    gathered_mta,
    is_fsdp,
    launched_on_cpu,
    load_fsdp_state,
    make_accelerator,
    save_fsdp_state,
    set_wrap_units,
)
from .inject import attach_mta, is_mta_param, optimizer_param_groups, set_trainable
from .models import BaseModelRef, check_positions, load_base_model
from .mta import alpha_per_task, mta_layers, task_context
from .quiet import peft_quietly


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (cron, batch schedulers) stopped the loop at the end of an optimizer
    step, after the checkpoint of that step was written. signum: the signal; step: the checkpoint's step."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} after step {step}")
        self.signum, self.step = signum, step


@dataclass
class AdapterIO:
    """How the loop freezes, saves and restores an adapter that is not MTA (the PEFT LoRA baseline,
    `baseline.build_baseline`); a ModelBundle without one gets the MTA behaviour.

    is_param(name) -> bool: the state-dict keys kept in `state/` (resume).
    set_trainable(model) -> int: freeze all but the adapter; the number of trainable parameters.
    write(folder, model, step): the checkpoint files (weights + configs) into a fresh folder.
    load(folder, model): adapter weights back into the model (resume).
    check_resumable(folder) -> dict: before `--resume`, raise CheckpointError when the checkpoint in
    folder was trained with another base model, task registry or adapter configuration; returns its
    metadata (with the step it was saved at).
    """

    is_param: Callable[[str], bool]
    set_trainable: Callable[[Any], int]
    write: Callable[[Path, Any, int], None]
    load: Callable[[Path, Any], None]
    check_resumable: Callable[[Path], dict[str, Any]]


@dataclass
class ModelBundle:
    """What the loop trains: the model with MTA attached, tokenizer, registry, MTA config, base ref
    (adapter: set for a non-MTA adapter, see AdapterIO)."""

    model: Any
    tokenizer: Any
    registry: TaskRegistry
    mta_config: MTAConfig | None
    base: BaseModelRef
    adapter: AdapterIO | None = None

    @property
    def is_seq2seq(self) -> bool:
        return self.base.model_type == "t5"


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    checkpoint: Path
    alpha: dict[str, float]
    seconds: float
    num_processes: int = 1
    sharded: bool = False  # trained under FSDP: the model in memory holds shards (load the checkpoint to use it)


class _Progress:
    """Loop position stored inside the accelerate state (register_for_checkpointing)."""

    def __init__(self) -> None:
        self.step = 0
        self.micro_batches = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "micro_batches": self.micro_batches}

    def load_state_dict(self, d: dict[str, int]) -> None:
        self.step, self.micro_batches = int(d["step"]), int(d["micro_batches"])


def build_stage1(cfg: Any) -> ModelBundle:
    """Default model set-up of stage 1: load the base model, attach MTA layers (cfg.mta)."""
    loaded = load_base_model(cfg.model.name, cfg.model.gguf_file)
    registry = TaskRegistry.from_config(cfg.tasks)
    attach_mta(loaded.model, cfg.mta, registry)
    return ModelBundle(loaded.model, loaded.tokenizer, registry, cfg.mta, loaded.ref)


def alpha_summary(model: Any, registry: TaskRegistry) -> dict[str, float]:
    """Per task: selector weight on its own experts, Σ_{k∈own(t)} α_{t,k}, averaged over MTA layers."""
    layers = mta_layers(model)
    if not layers:
        return {}
    with torch.no_grad():
        own = torch.stack([(layer.alpha() * layer.own_mask().to(layer.selector.device)).sum(-1) for layer in layers])
    return {name: float(v) for name, v in zip(registry.names, own.float().mean(0), strict=True)}


def gate_summary(model: Any) -> dict[str, float]:
    """Gate statistics of the last forward, averaged over MTA layers (empty before stage 2)."""
    stats = [s for layer in mta_layers(model) if (s := layer.gate_stats()) is not None]
    if not stats:
        return {}
    return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}


@dataclass
class _Run:
    """What the steps of one `run_training` share: the accelerator, the prepared objects and the
    unwrapped model (raw), the loop position (progress) and where checkpoints go."""

    cfg: Any
    stage: int
    out_dir: Path
    accelerator: Any
    bundle: ModelBundle
    model: Any = None
    raw: Any = None
    params: list = None  # type: ignore[assignment]
    optimizer: Any = None
    scheduler: Any = None
    loader: Any = None
    progress: _Progress = None  # type: ignore[assignment]
    backbone_names: list[str] = None  # type: ignore[assignment]
    custom: list = None  # type: ignore[assignment]  # registered for checkpointing, in order
    keep: Callable[[str], bool] = None  # type: ignore[assignment]  # the state-dict keys state/ keeps


def _set_up_model(cfg: Any, stage: int, setup_model: Callable[[Any], ModelBundle]) -> ModelBundle:
    """Seed, build the stage's model (setup_model) and freeze all but what `stage` trains."""
    from accelerate.utils import set_seed

    tc = cfg.train
    set_seed(tc.seed)
    bundle = setup_model(cfg)
    check_positions(bundle.model, cfg.data.max_length, "data.max_length")
    if tc.mixed_precision == "fp16" and bundle.is_seq2seq:
        raise TrainingError("mixed_precision fp16 is refused for T5 models (they overflow to NaN); use bf16 or no")
    if bundle.adapter is not None:
        n_trainable = bundle.adapter.set_trainable(bundle.model)
    else:
        n_trainable = set_trainable(bundle.model, stage, tc.unfreeze_backbone, tc.tune_selector, tc.tune_task_experts)
    if n_trainable == 0:
        raise TrainingError("no trainable parameters")
    if hasattr(bundle.model.config, "use_cache"):
        bundle.model.config.use_cache = False
    if getattr(tc, "gradient_checkpointing", False):
        enable_gradient_checkpointing(bundle.model)
    return bundle


def enable_gradient_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing of every transformer block, non-reentrant
    (torch.utils.checkpoint with use_reentrant=False): it needs no input that requires grad, so it
    works with a frozen backbone and trainable MTA layers inside the blocks (the reentrant form
    returns no gradient there: transformers#23170). The MTA layers are recomputed in the backward
    pass, which `_train_loop` runs inside the task context. Raises TrainingError for a model
    without transformers' gradient checkpointing."""
    if not getattr(model, "supports_gradient_checkpointing", False) and not hasattr(model, "base_model"):
        raise TrainingError(f"train.gradient_checkpointing: {type(model).__name__} does not support it")
    with peft_quietly():
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 (the old name warns)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _make_loader(cfg: Any, bundle: ModelBundle, examples: Sequence[Example], num_processes: int) -> Any:
    """Encoded examples behind the task-balanced sampler (max_steps · accumulation · batch_size
    draws per process)."""
    from torch.utils.data import DataLoader

    tc = cfg.train
    dataset = encode_dataset(
        bundle.tokenizer, examples, bundle.registry, bundle.is_seq2seq, cfg.data.prompt_format,
        cfg.data.max_length, cfg.data.max_target_length,
    )
    micro_per_process = tc.max_steps * tc.gradient_accumulation_steps
    sampler = TaskBalancedSampler(dataset.task_ids, micro_per_process * tc.batch_size * num_processes,
                                  cfg.data.sampling_temperature, tc.seed)
    return DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler,
                      collate_fn=Collator(bundle.tokenizer.pad_token_id))


def _prepare(run: _Run, loader: Any) -> None:
    """Optimizer and schedule over the trainable parameters, `accelerator.prepare`, the loop
    position and schedule registered for checkpointing, and a save hook that keeps only the trained
    weights in state/ (adapter, plus the backbone with unfreeze_backbone)."""
    from transformers import get_scheduler

    tc, acc, model = run.cfg.train, run.accelerator, run.bundle.model
    groups = [p for p in model.parameters() if p.requires_grad] if run.bundle.adapter is not None else (
        optimizer_param_groups(model, tc.learning_rate, run.bundle.mta_config))  # selector / gate at their own rates
    optimizer = torch.optim.AdamW(groups, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    run.scheduler = get_scheduler(tc.scheduler, optimizer, num_warmup_steps=tc.warmup_steps,
                                  num_training_steps=tc.max_steps)
    model.train()
    set_wrap_units(acc, model)
    run.model, run.optimizer, run.loader = acc.prepare(model, optimizer, loader)
    run.params = [p for p in run.model.parameters() if p.requires_grad]  # FSDP: the new (sharded) ones
    run.progress = _Progress()
    run.custom = [run.scheduler, run.progress]
    acc.register_for_checkpointing(*run.custom)
    run.raw = acc.unwrap_model(run.model)
    adapter = run.bundle.adapter
    run.backbone_names = [] if adapter is not None else trained_backbone_names(run.raw)
    keep_backbone = set(run.backbone_names)

    def keep(k: str) -> bool:
        if adapter is not None:
            return adapter.is_param(k)
        return is_mta_param(k) or k.removeprefix("module.") in keep_backbone

    run.keep = keep
    def only_trained(_models: list, weights: list, _dir: str) -> None:
        for i, w in enumerate(weights):
            weights[i] = {k: v for k, v in w.items() if keep(k)}

    acc.register_save_state_pre_hook(only_trained)


def _save(run: _Run, step: int) -> None:
    """Write the checkpoint of `step` as one atomic step (checkpoint.py, swap.py): accelerate state
    (all ranks) and adapter files (main process) into a hidden folder of out_dir, then committed.
    A failure before the commit leaves the previous checkpoint as it was."""
    acc, out_dir, adapter = run.accelerator, run.out_dir, run.bundle.adapter
    if acc.is_main_process:
        recover_checkpoint(out_dir)
        swap.begin(out_dir)
    acc.wait_for_everyone()
    folder = swap.writing_dir(out_dir)
    committing = False
    try:
        weights = None
        if is_fsdp(acc):  # gathered in full on every process (see distributed.py), saved as under DDP
            weights = full_state(run.raw, run.keep)
            save_fsdp_state(acc, folder / STATE_DIR, weights, run.optimizer, [run.loader], run.custom)
        else:
            acc.save_state(str(folder / STATE_DIR))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if adapter is not None:
                adapter.write(folder, run.raw, step)
            else:
                write_adapter(folder, run.raw, checkpoint_meta(run.bundle, run.stage, step, run.cfg.data),
                              run.backbone_names, weights)
            committing = True
            save_checkpoint_files(out_dir, step)
    except BaseException:  # failed or interrupted before the commit: leave no half-written folder behind
        if acc.is_main_process and not committing:
            swap.discard(out_dir)
        raise
    acc.wait_for_everyone()


def _resume(run: _Run) -> None:
    """Check that out_dir's checkpoint fits this run, then restore the accelerate state (weights,
    optimizer, schedule, RNG, loop position) and the adapter weights. Raises CheckpointError."""
    from safetensors import SafetensorError

    acc, out_dir, adapter = run.accelerator, run.out_dir, run.bundle.adapter
    if adapter is None:
        check_resumable(out_dir, run.bundle, run.stage, acc.process_index)
    else:
        meta = adapter.check_resumable(out_dir)
        check_state_complete(out_dir, acc.process_index)
        check_same_step(out_dir, (meta or {}).get("step"))
    try:
        if is_fsdp(acc):
            load_fsdp_state(acc, out_dir / STATE_DIR, run.optimizer, [run.loader], run.custom)
        else:
            acc.load_state(str(out_dir / STATE_DIR), strict=False)
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"--resume: corrupt accelerate state in {str(out_dir / STATE_DIR)!r} "
                              f"({exc.__class__.__name__}: {first})") from None
    if adapter is not None:
        adapter.load(out_dir, run.raw)
        return
    load_mta_weights(run.raw, out_dir / ADAPTER_WEIGHTS)
    if run.backbone_names:  # the adapter files, not state/, whose key names differ with the process count
        from .checkpoint import backbone_file, read_meta

        load_backbone_weights(run.raw, backbone_file(out_dir, read_meta(out_dir, ADAPTER_CONFIG).get("backbone_weights")))


def _train_loop(run: _Run, stop: int, on_step: Callable[[dict[str, Any]], None] | None,
                extra_loss: Callable[[dict[str, Any]], torch.Tensor | None] | None,
                signals: StopSignals | None = None) -> float | None:
    """Optimizer steps from the resumed position up to `stop`, a checkpoint every save_every steps
    (not at `stop`: the caller writes the last one); the mean loss of the last log window.
    With `signals`, a SIGINT/SIGTERM stops after the current step: checkpoint, TrainingInterrupted."""
    tc, acc, model, raw, progress = run.cfg.train, run.accelerator, run.model, run.raw, run.progress
    route = task_context if mta_layers(raw) else (lambda _m, _t: contextlib.nullcontext())
    batches = acc.skip_first_batches(run.loader, progress.micro_batches) if progress.micro_batches else run.loader
    window_loss = torch.zeros((), device=acc.device)
    window_n = 0
    last_loss: float | None = None
    for batch in batches:
        if progress.step >= stop:
            break
        task_ids = batch.pop("task_ids")
        with acc.accumulate(model):
            with route(raw, task_ids):  # backward inside: gradient checkpointing re-runs the MTA layers
                loss = model(**batch).loss
                if extra_loss is not None and (extra := extra_loss(batch)) is not None:
                    loss = loss + extra
                acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(run.params, tc.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        progress.micro_batches += 1
        window_loss += loss.detach().float()
        window_n += 1
        if not acc.sync_gradients:
            continue
        run.scheduler.step()
        progress.step += 1
        do_log = progress.step % tc.log_every == 0 or progress.step == stop
        record: dict[str, Any] = {"step": progress.step, "max_steps": tc.max_steps, "log": do_log,
                                  "lr": run.scheduler.get_last_lr()[0], "loss_micro": float(loss.detach())}
        if do_log:
            mean = acc.reduce(window_loss / max(window_n, 1), reduction="mean")
            last_loss = float(mean)
            if not math.isfinite(last_loss):
                raise TrainingError(f"loss is {last_loss} at step {progress.step} (try mixed_precision no, a lower lr)")
            record["loss"] = last_loss
            window_loss.zero_()
            window_n = 0
        with gathered_mta(raw):  # FSDP: the selectors in full on every process
            record["alpha"] = alpha_summary(raw, run.bundle.registry)
            if do_log and (per_task := alpha_per_task(raw, run.bundle.registry.names)):
                record["alpha_per_task"] = per_task
        record.update(gate_summary(raw))
        if on_step is not None and acc.is_main_process:
            on_step(record)
        saved = bool(tc.save_every and progress.step % tc.save_every == 0 and progress.step < stop)
        if saved:
            _save(run, progress.step)
        if signals is not None and progress.step < stop and (signum := agreed_stop(acc, signals)):
            if not saved:
                _save(run, progress.step)
            raise TrainingInterrupted(signum, progress.step)
    return last_loss


def run_training(
    cfg: Any,
    stage: int = 1,
    *,
    train_examples: Sequence[Example],
    out_dir: str | Path,
    resume: bool = False,
    setup_model: Callable[[Any], ModelBundle] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
    extra_loss: Callable[[dict[str, Any]], torch.Tensor | None] | None = None,
) -> TrainResult:
    """Train the adapter of `stage` with accelerate; write the checkpoint into `out_dir`.

    cfg: an object with `.train` (config.TrainConfig), `.data` (config.DataConfig) and what
    `setup_model` reads (stage 1 default: `.model`, `.tasks`, `.mta`, see `build_stage1`).
    stage: 1 or 2 (MTA), 0 (the LoRA baseline: its bundle carries an AdapterIO).
    setup_model(cfg) -> ModelBundle: the stage's model set-up (stage 2: load the stage-1 checkpoint,
    `inject.add_shared_experts`); freezing is done here by `inject.set_trainable(model, stage, ...)`.
    on_step(record): called on the main process after every optimizer step; record has step,
    max_steps, loss (mean of the last log window when record["log"]), lr, alpha (per task), gate stats.
    stop_after: stop (with a checkpoint) after this many optimizer steps (time-limited jobs, tests).
    extra_loss(batch): called after each micro-batch forward (inside the task context); a returned
    tensor is added to the loss (stage 2: the gate regulariser, see `stage2.GateMonitor`).
    SIGINT / SIGTERM during the loop: checkpoint at the end of the step, then TrainingInterrupted.
    Raises TrainingError / CheckpointError / ModelLoadError / data errors with one-line messages.
    """
    tc = cfg.train
    out_dir = Path(out_dir)
    if setup_model is None:
        if stage != 1:
            raise TrainingError("stage 2 needs a setup_model that loads the stage-1 checkpoint")
        setup_model = build_stage1
    accelerator = make_accelerator(tc, stage)
    if resume and accelerator.is_main_process:
        recover_checkpoint(out_dir)
    accelerator.wait_for_everyone()
    if resume and not (out_dir / STATE_DIR).is_dir():
        raise TrainingError(f"--resume: no checkpoint state in {str(out_dir)!r}")
    bundle = _set_up_model(cfg, stage, setup_model)
    run = _Run(cfg, stage, out_dir, accelerator, bundle)
    _prepare(run, _make_loader(cfg, bundle, train_examples, accelerator.num_processes))
    if resume:
        _resume(run)
    t0 = time.perf_counter()
    with StopSignals() as signals:
        last_loss = _train_loop(run, tc.max_steps if stop_after is None else min(tc.max_steps, stop_after),
                                on_step, extra_loss, signals)
    _save(run, run.progress.step)
    with gathered_mta(run.raw):
        alpha = alpha_summary(run.raw, bundle.registry)
    return TrainResult(run.progress.step, last_loss, out_dir, alpha, time.perf_counter() - t0,
                       accelerator.num_processes, is_fsdp(accelerator))
