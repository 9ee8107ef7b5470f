"""The accelerate training loop shared by both stages, checkpoints (MTA weights only) and resume.

One loop for every device (spec section 4): `Accelerator.prepare`, `accumulate`, `save_state` /
`load_state` (model MTA weights, optimizer, scheduler, RNG, progress) and `skip_first_batches`, so
`accelerate launch` runs it unchanged with several processes (DDP).

DDP and tasks missing from a micro-batch: every selector is one (T, E) parameter whose softmax is
computed for all T rows before the batch's rows are indexed, and every expert runs on every token,
so each trainable parameter takes part in every backward (rows of absent tasks get exact zero
gradients). DDP therefore runs with find_unused_parameters=False (no extra graph traversal each step).

Checkpoint layout (a directory): adapter_model.safetensors (MTA parameters only), adapter_config.json
(sorted keys, format_version, base model + config hash, task registry, MTA config, stage), state/
(accelerate state for `--resume`), and, only when the backbone was trained (train.unfreeze_backbone),
backbone_model.safetensors with the trained backbone parameters (else they would be lost on reload). Written by the main process to a temporary folder, then renamed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from . import __version__
from .config import MTAConfig
from .data import Collator, Example, TaskBalancedSampler, TaskRegistry, encode_dataset
from .inject import add_shared_experts, attach_mta, is_mta_param, mta_state_dict, set_trainable
from .models import BaseModelRef, ModelLoadError, load_base_model
from .mta import mta_layers, task_context

FORMAT_VERSION = 1
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BACKBONE_WEIGHTS = "backbone_model.safetensors"
STATE_DIR = "state"


class CheckpointError(ValueError):
    """A corrupt, incomplete or mismatched checkpoint."""


class TrainingError(ValueError):
    """A training set-up a user can fix (e.g. fp16 with T5, nothing to resume from)."""


@dataclass
class AdapterIO:
    """How the loop freezes, saves and restores an adapter that is not MTA (the PEFT LoRA baseline,
    `baseline.build_baseline`); a ModelBundle without one gets the MTA behaviour.

    is_param(name) -> bool: the state-dict keys kept in `state/` (resume).
    set_trainable(model) -> int: freeze all but the adapter; the number of trainable parameters.
    write(folder, model, step): the checkpoint files (weights + configs) into a fresh folder.
    load(folder, model): adapter weights back into the model (resume).
    check_resumable(folder): before `--resume`, raise CheckpointError when the checkpoint in folder
    was trained with another base model, task registry or adapter configuration.
    """

    is_param: Callable[[str], bool]
    set_trainable: Callable[[Any], int]
    write: Callable[[Path, Any, int], None]
    load: Callable[[Path, Any], None]
    check_resumable: Callable[[Path], None]


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
class LoadedCheckpoint:
    model: Any
    tokenizer: Any
    registry: TaskRegistry
    mta_config: MTAConfig | None  # None for a LoRA baseline checkpoint (stage 0)
    stage: int
    base: BaseModelRef | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_seq2seq(self) -> bool:
        return getattr(self.model.config, "is_encoder_decoder", False)


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    checkpoint: Path
    alpha: dict[str, float]
    seconds: float
    num_processes: int = 1


class _Progress:
    """Loop position stored inside the accelerate state (register_for_checkpointing)."""

    def __init__(self) -> None:
        self.step = 0
        self.micro_batches = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "micro_batches": self.micro_batches}

    def load_state_dict(self, d: dict[str, int]) -> None:
        self.step, self.micro_batches = int(d["step"]), int(d["micro_batches"])


def launched_on_cpu() -> bool:
    """True for a multi-process launch (WORLD_SIZE > 1) on a machine without CUDA: accelerate then
    needs cpu=True to set up gloo DDP (MULTI_CPU); otherwise every process would think it is rank 0."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


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


def checkpoint_meta(bundle: ModelBundle, stage: int, step: int, data_cfg: Any = None) -> dict[str, Any]:
    has_shared = any(layer.shared is not None for layer in mta_layers(bundle.model))
    meta = {
        "format_version": FORMAT_VERSION,
        "alter_version": __version__,
        "stage": stage,
        "step": step,
        "base_model": bundle.base.to_dict(),
        "registry": bundle.registry.to_dict(),
        "mta_config": bundle.mta_config.model_dump(mode="json"),
        "has_shared_experts": has_shared,
    }
    if data_cfg is not None:
        meta["data"] = {k: getattr(data_cfg, k) for k in ("prompt_format", "max_length", "max_target_length")}
    return meta


def trained_backbone_names(model: Any) -> list[str]:
    """Names of the trainable parameters outside the MTA layers (non-empty only with unfreeze_backbone)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and not is_mta_param(n)]


def write_adapter(directory: Path, model: Any, meta: dict[str, Any], backbone_names: Sequence[str] = ()) -> None:
    """adapter_model.safetensors + adapter_config.json (sorted keys) into `directory`; with
    `backbone_names` (trained backbone parameters) also backbone_model.safetensors, named in the meta."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(mta_state_dict(model), str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    if backbone_names:
        params = dict(model.named_parameters())
        save_file({n: params[n].detach().cpu().clone().contiguous() for n in backbone_names},
                  str(directory / BACKBONE_WEIGHTS), metadata={"format": "pt"})
        meta = {**meta, "backbone_weights": BACKBONE_WEIGHTS}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _honour_umask(directory: Path) -> None:
    """safetensors writes its files 0600 (through a temporary file): give every file of a checkpoint
    the mode a normal file gets (0666 minus the umask), so a shared checkpoint can be read by others."""
    mode = 0o666 & ~_umask()
    for f in directory.rglob("*"):
        if f.is_file():
            os.chmod(f, mode)


@contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold Ctrl-C / SIGINT back while the checkpoint folder is being swapped (a few renames), then
    deliver it: an interruption there would leave state/ renamed away and nothing to --resume."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _swap_into(tmp: Path, out_dir: Path) -> None:
    """Move a finished checkpoint from `tmp` into `out_dir` (files by os.replace, state/ by rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (tmp / STATE_DIR).exists():
        old = out_dir / f".{STATE_DIR}-old"
        if old.exists():
            shutil.rmtree(old)
        if (out_dir / STATE_DIR).exists():
            os.rename(out_dir / STATE_DIR, old)
        os.rename(tmp / STATE_DIR, out_dir / STATE_DIR)
        shutil.rmtree(old, ignore_errors=True)
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            os.replace(f, out_dir / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _read_meta(path: Path, config_name: str = ADAPTER_CONFIG) -> dict[str, Any]:
    """The checkpoint's JSON config `config_name`, after checking that the folder holds it and the
    adapter files, that it is valid JSON and of our format version.
    Raises CheckpointError."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such directory")
    for name in dict.fromkeys((config_name, ADAPTER_CONFIG, ADAPTER_WEIGHTS)):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {str(path)!r}: missing {name}")
    try:
        meta = json.loads((path / config_name).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {config_name} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: {config_name} format_version "
            f"{meta.get('format_version') if isinstance(meta, dict) else None!r} is not {FORMAT_VERSION}"
        )
    return meta


BASELINE_CONFIG = "alter_baseline.json"


def is_baseline_checkpoint(path: Path) -> bool:
    """True for a PEFT LoRA baseline checkpoint (`alter train-baseline`), recognised by its
    alter_baseline.json next to PEFT's own adapter files."""
    return (Path(path) / BASELINE_CONFIG).is_file()


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The adapter_config.json of a checkpoint folder, checked (format version, task registry),
    without loading any model. Raises CheckpointError."""
    path = Path(path)
    if is_baseline_checkpoint(path):
        from .baseline import read_baseline_meta

        return read_baseline_meta(path)
    meta = _read_meta(path)
    try:
        TaskRegistry.from_dict(meta["registry"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: malformed task registry ({exc.__class__.__name__})") from None
    return meta


def load_mta_weights(model: Any, weights_file: Path) -> None:
    """Load MTA weights into a model whose MTA layers are attached; CheckpointError on key/shape mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{str(weights_file)!r}: unreadable safetensors ({exc})") from None
    expected = {k: v for k, v in model.state_dict().items() if is_mta_param(k)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{str(weights_file)!r}: MTA weights do not match the model ({what})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{str(weights_file)!r}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=False)


def load_backbone_weights(model: Any, weights_file: Path) -> None:
    """Load trained backbone parameters (backbone_model.safetensors); CheckpointError if the file is
    missing/unreadable or names a parameter the model lacks or with another shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{str(weights_file)!r}: unreadable safetensors ({exc})") from None
    expected = dict(model.named_parameters())
    for k, v in state.items():
        if k not in expected or is_mta_param(k):
            raise CheckpointError(f"{str(weights_file)!r}: unexpected backbone parameter {k}")
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{str(weights_file)!r}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    with torch.no_grad():
        for k, v in state.items():
            expected[k].copy_(v)


def check_resumable(out_dir: Path, bundle: ModelBundle, stage: int, process_index: int = 0) -> None:
    """Before `--resume`: the checkpoint in `out_dir` must be complete and trained with the same
    base model, task registry, MTA config and stage as this run; CheckpointError naming the difference."""
    meta = _read_meta(out_dir)
    now = checkpoint_meta(bundle, stage, 0)
    if isinstance(meta.get("mta_config"), dict):  # fields added since (e.g. gate_combine) take their defaults
        try:
            meta["mta_config"] = MTAConfig.model_validate(meta["mta_config"]).model_dump(mode="json")
        except ValidationError:
            pass  # reported below as a different MTA config
    for key, what in (("stage", "stage"), ("registry", "task registry (tasks:)"), ("mta_config", "MTA config (mta:)")):
        if meta.get(key) != now[key]:
            diff = ""
            if key == "mta_config" and isinstance(meta.get(key), dict):
                k = next((k for k in sorted(now[key]) if meta[key].get(k) != now[key][k]), None)
                diff = f": mta.{k} was {meta[key].get(k)!r}, now {now[key][k]!r}" if k else ""
            raise CheckpointError(f"--resume: {str(out_dir)!r} was trained with another {what}{diff}")
    if (meta.get("base_model") or {}).get("config_hash") != now["base_model"]["config_hash"]:
        raise CheckpointError(f"--resume: {str(out_dir)!r} was trained on another base model "
                              f"({(meta.get('base_model') or {}).get('name')!r})")
    check_state_complete(out_dir, process_index)


def check_state_complete(out_dir: Path, process_index: int = 0) -> None:
    """The accelerate state of `out_dir` (weights, optimizer, scheduler, sampler, this rank's RNG)
    is all there; CheckpointError naming the first missing file otherwise."""
    from accelerate.utils import OPTIMIZER_NAME, RNG_STATE_NAME, SAFE_WEIGHTS_NAME

    state = out_dir / STATE_DIR
    needed = [SAFE_WEIGHTS_NAME, f"{OPTIMIZER_NAME}.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl",
              f"{RNG_STATE_NAME}_{process_index}.pkl"]
    missing = [n for n in needed if not (state / n).is_file()]
    if missing:
        raise CheckpointError(f"--resume: {str(state)!r} is incomplete (missing {missing[0]})")


def load_checkpoint_base(path: Path, base: dict[str, Any]) -> Any:
    """Load the base model a checkpoint names (its `base_model` record) and check its config hash.
    Returns the models.LoadedModel. Raises CheckpointError (not loadable, or another config hash)."""
    try:
        loaded = load_base_model(base["name"], base.get("gguf_file"))
    except ModelLoadError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: base model: {exc}") from None
    if loaded.ref.config_hash != base.get("config_hash"):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: base model {base['name']!r} has config hash {loaded.ref.config_hash}, "
            f"the checkpoint was trained on {base.get('config_hash')}"
        )
    return loaded


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedCheckpoint:
    """Rebuild base model + MTA (incl. stage-2 shared experts and gate) from a checkpoint directory
    (or base model + PEFT LoRA adapter for a `train-baseline` checkpoint, stage 0).

    The model is returned in eval mode with every parameter frozen. Raises CheckpointError for a
    missing/corrupt checkpoint, a base model that cannot be loaded, or one whose config hash differs.
    """
    path = Path(path)
    if is_baseline_checkpoint(path):
        from .baseline import load_baseline_checkpoint

        return load_baseline_checkpoint(path, device)
    meta = _read_meta(path)
    try:
        registry = TaskRegistry.from_dict(meta["registry"])
        mta_cfg = MTAConfig.model_validate(meta["mta_config"])
        base = meta["base_model"]
        stage = int(meta["stage"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: malformed {ADAPTER_CONFIG} ({exc.__class__.__name__})") from None
    loaded = load_checkpoint_base(path, base)
    model = loaded.model
    try:
        attach_mta(model, mta_cfg, registry)
        if meta.get("has_shared_experts"):
            add_shared_experts(model, mta_cfg)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot rebuild the MTA layers ({exc})") from None
    load_mta_weights(model, path / ADAPTER_WEIGHTS)
    if meta.get("backbone_weights"):
        load_backbone_weights(model, path / str(meta["backbone_weights"]))
    model.requires_grad_(False)
    model.to(device).eval()
    return LoadedCheckpoint(model, loaded.tokenizer, registry, mta_cfg, stage, loaded.ref, meta)


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
    """Train MTA parameters of `stage` with accelerate; write the checkpoint into `out_dir`.

    cfg: an object with `.train` (config.TrainConfig), `.data` (config.DataConfig) and what
    `setup_model` reads (stage 1 default: `.model`, `.tasks`, `.mta`, see `build_stage1`).
    setup_model(cfg) -> ModelBundle: the stage's model set-up (stage 2: load the stage-1 checkpoint,
    `inject.add_shared_experts`); freezing is done here by `inject.set_trainable(model, stage, ...)`.
    on_step(record): called on the main process after every optimizer step; record has step,
    max_steps, loss (mean of the last log window when record["log"]), lr, alpha (per task), gate stats.
    stop_after: stop (with a checkpoint) after this many optimizer steps (time-limited jobs, tests).
    extra_loss(batch): called after each micro-batch forward (inside the task context); a returned
    tensor is added to the loss (stage 2: the gate regulariser, see `stage2.GateMonitor`).
    Raises TrainingError / CheckpointError / ModelLoadError / data errors with one-line messages.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    tc = cfg.train
    out_dir = Path(out_dir)
    if setup_model is None:
        if stage != 1:
            raise TrainingError("stage 2 needs a setup_model that loads the stage-1 checkpoint")
        setup_model = build_stage1
    if resume and not (out_dir / STATE_DIR).is_dir():
        raise TrainingError(f"--resume: no checkpoint state in {str(out_dir)!r}")

    # A second run in the same process (stage 1 then stage 2, tests) may change mixed precision:
    # AcceleratorState is a process-wide singleton, so clear it (the distributed PartialState stays).
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=launched_on_cpu(),
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        mixed_precision=tc.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    set_seed(tc.seed)
    bundle = setup_model(cfg)
    model = bundle.model
    if tc.mixed_precision == "fp16" and bundle.is_seq2seq:
        raise TrainingError("mixed_precision fp16 is refused for T5 models (they overflow to NaN); use bf16 or no")
    adapter = bundle.adapter
    if adapter is not None:
        n_trainable = adapter.set_trainable(model)
    else:
        n_trainable = set_trainable(model, stage, tc.unfreeze_backbone, getattr(tc, "tune_selector", False))
    if n_trainable == 0:
        raise TrainingError("no trainable parameters")
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False

    dataset = encode_dataset(
        bundle.tokenizer, train_examples, bundle.registry, bundle.is_seq2seq, cfg.data.prompt_format,
        cfg.data.max_length, cfg.data.max_target_length,
    )
    micro_per_process = tc.max_steps * tc.gradient_accumulation_steps
    sampler = TaskBalancedSampler(
        dataset.task_ids, micro_per_process * tc.batch_size * accelerator.num_processes,
        cfg.data.sampling_temperature, tc.seed,
    )
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler,
                        collate_fn=Collator(bundle.tokenizer.pad_token_id))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    scheduler = get_scheduler(tc.scheduler, optimizer, num_warmup_steps=tc.warmup_steps,
                              num_training_steps=tc.max_steps)
    model.train()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    progress = _Progress()
    accelerator.register_for_checkpointing(scheduler, progress)

    backbone_names = [] if adapter is not None else trained_backbone_names(accelerator.unwrap_model(model))
    keep_backbone = set(backbone_names)

    def keep(k: str) -> bool:
        if adapter is not None:
            return adapter.is_param(k)
        return is_mta_param(k) or k.removeprefix("module.") in keep_backbone

    def _only_mta(models: list, weights: list, _dir: str) -> None:
        for i, w in enumerate(weights):
            weights[i] = {k: v for k, v in w.items() if keep(k)}

    accelerator.register_save_state_pre_hook(_only_mta)
    raw = accelerator.unwrap_model(model)

    def save(step: int) -> None:
        tmp = out_dir.parent / f".{out_dir.name}.tmp-save"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(tmp / STATE_DIR))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                if adapter is not None:
                    adapter.write(tmp, raw, step)
                else:
                    write_adapter(tmp, raw, checkpoint_meta(bundle, stage, step, cfg.data), backbone_names)
                _honour_umask(tmp)
                with _defer_sigint():
                    _swap_into(tmp, out_dir)
        except BaseException:  # interrupted or failed while writing: leave no half-written folder behind
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        accelerator.wait_for_everyone()

    if resume:
        if adapter is None:
            check_resumable(out_dir, bundle, stage, accelerator.process_index)
        else:
            adapter.check_resumable(out_dir)
            check_state_complete(out_dir, accelerator.process_index)
        from safetensors import SafetensorError

        try:
            accelerator.load_state(str(out_dir / STATE_DIR), strict=False)
        except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(f"--resume: corrupt accelerate state in {str(out_dir / STATE_DIR)!r} "
                                  f"({exc.__class__.__name__}: {first})") from None
        if adapter is not None:
            adapter.load(out_dir, raw)
        else:
            load_mta_weights(raw, out_dir / ADAPTER_WEIGHTS)
    route = task_context if mta_layers(raw) else (lambda _m, _t: contextlib.nullcontext())
    batches = accelerator.skip_first_batches(loader, progress.micro_batches) if progress.micro_batches else loader

    t0 = time.perf_counter()
    window_loss = torch.zeros((), device=accelerator.device)
    window_n = 0
    last_loss: float | None = None
    stop = tc.max_steps if stop_after is None else min(tc.max_steps, stop_after)
    for batch in batches:
        if progress.step >= stop:
            break
        task_ids = batch.pop("task_ids")
        with accelerator.accumulate(model):
            with route(raw, task_ids):
                loss = model(**batch).loss
                if extra_loss is not None and (extra := extra_loss(batch)) is not None:
                    loss = loss + extra
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, tc.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        progress.micro_batches += 1
        window_loss += loss.detach().float()
        window_n += 1
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        progress.step += 1
        do_log = progress.step % tc.log_every == 0 or progress.step == stop
        record: dict[str, Any] = {"step": progress.step, "max_steps": tc.max_steps, "log": do_log,
                                  "lr": scheduler.get_last_lr()[0], "loss_micro": float(loss.detach())}
        if do_log:
            mean = accelerator.reduce(window_loss / max(window_n, 1), reduction="mean")
            last_loss = float(mean)
            if not math.isfinite(last_loss):
                raise TrainingError(f"loss is {last_loss} at step {progress.step} (try mixed_precision no, a lower lr)")
            record["loss"] = last_loss
            window_loss.zero_()
            window_n = 0
        record["alpha"] = alpha_summary(raw, bundle.registry)
        record.update(gate_summary(raw))
        if on_step is not None and accelerator.is_main_process:
            on_step(record)
        if tc.save_every and progress.step % tc.save_every == 0 and progress.step < stop:
            save(progress.step)
    save(progress.step)
    return TrainResult(progress.step, last_loss, out_dir, alpha_summary(raw, bundle.registry),
                       time.perf_counter() - t0, accelerator.num_processes)
