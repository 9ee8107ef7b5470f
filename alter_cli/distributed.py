"""How `alter`'s training runs on several processes: the Accelerator (one process, DDP or FSDP2), the
FSDP wrap units, the full (unsharded) trained state that checkpoints hold under FSDP, and the stop
signals that all processes agree on.

Which one (`train.distributed`, `choose_fsdp`): "auto" (default) is FSDP when the launcher turns it on
(`accelerate launch --use_fsdp --fsdp_version 2`, or an accelerate config file with
`distributed_type: FSDP` and `fsdp_version: 2`), else DDP when several processes are launched; "fsdp"
is FSDP2 under any multi-process launch (e.g. `accelerate launch --multi_gpu`); "ddp" never FSDP.

FSDP, as alter uses it: torch's FSDP2 (`torch.distributed.fsdp.fully_shard`, per-parameter sharding
with DTensor) through accelerate's `FullyShardedDataParallelPlugin(fsdp_version=2)`.

- Wrap units (`set_wrap_units`): every MTA layer (`mta.MTALayer`: task experts, selector, stage-2
  shared experts and gate) is a fully_shard unit of its own, nested in the unit of its transformer
  block (the model's `_no_split_modules`, or the classes named by fsdp_transformer_layer_cls_to_wrap);
  accelerate adds the input embedding, the final norm + LM head, and the root. Why: FSDP1 flattens a
  unit into one flat parameter, so frozen backbone and trainable MTA weights in one unit cannot work
  (pytorch/pytorch#104690) — FSDP1 is refused. FSDP2 keeps every parameter apart, so nothing frozen
  and trainable shares storage, but the units still decide the traffic: a unit's parameters are
  all-gathered together and its gradients reduce-scattered together. With the MTA layers as units
  of their own, a frozen block's unit has no gradient and FSDP2 does no reduce-scatter for it, the
  MTA units' reduce-scatter carries exactly the trained weights, and FSDP2's rule that the trainable
  parameters of a unit share one dtype holds (fp32 MTA weights beside a bf16 backbone). In stage 2
  an MTA unit holds the frozen task experts (and selector) beside the trainable shared experts and
  gate: FSDP2 reduce-scatters only parameters that have a gradient and the optimizer holds only the
  trainable DTensors, so the frozen ones cost their all-gather, which the forward needs anyway.
- Outside forward the weights are sharded DTensors: the per-step summaries (selector weights) run
  inside `gathered_mta` on every process, and a checkpoint gathers the trained weights (`full_state`).
- Checkpoints: the same files as under DDP or one process (checkpoint.py). state/ holds the trained
  weights in full (model.safetensors) and the optimizer as `Optimizer.state_dict()` with full tensors
  (optimizer.bin, DDP's layout), beside accelerate's RNG and custom-object files (`save_fsdp_state`).
  accelerate's own FSDP save (the whole model, sharded, by torch.distributed.checkpoint) is not
  used, so fsdp_state_dict_type has no effect, and a checkpoint resumes under FSDP, DDP or one process.
- CPU: accelerate 1.15 turns FSDP on for accelerator devices only (AcceleratorState sets
  DistributedType.FSDP for MULTI_GPU/NPU/XPU/..., not MULTI_CPU) while torch's FSDP2 runs on CPU with
  gloo; on a CPU launch (tests, CI) `make_accelerator` sets the FSDP type and plugin on the
  accelerator state, so accelerate's FSDP2 code (prepare, wrapping, no_sync, clipping) runs as on GPUs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .mta import MTALayer


class TrainingError(ValueError):
    """A training set-up a user can fix (e.g. fp16 with T5, nothing to resume from, FSDP on one process)."""


def launched_on_cpu() -> bool:
    """True for a multi-process launch (WORLD_SIZE > 1) on a machine without CUDA: accelerate then
    needs cpu=True to set up gloo DDP (MULTI_CPU); otherwise every process would think it is rank 0."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("true", "1", "yes")


def choose_fsdp(tc: Any, stage: int, num_processes: int) -> bool:
    """Whether this run trains under FSDP (train.distributed and the launcher's ACCELERATE_USE_FSDP).
    Raises TrainingError for what cannot work: ddp asked under an FSDP launch, FSDP1, the PEFT LoRA
    baseline (stage 0), FSDP on one process."""
    launcher = _env_true("ACCELERATE_USE_FSDP")
    mode = getattr(tc, "distributed", "auto")
    if mode == "ddp" and launcher:
        raise TrainingError("train.distributed is ddp but the launcher turns FSDP on (accelerate launch --use_fsdp "
                            "or an FSDP config file); drop one of the two")
    if not (mode == "fsdp" or launcher):
        return False
    if launcher and os.environ.get("FSDP_VERSION", "1").strip() != "2":
        raise TrainingError(f"FSDP version {os.environ.get('FSDP_VERSION', '1')} is not supported (FSDP1's flat "
                            "parameters mix frozen and trainable weights, pytorch/pytorch#104690); use "
                            "accelerate launch --fsdp_version 2 (fsdp_version: 2 in the config file)")
    if stage == 0:
        raise TrainingError("FSDP is not supported for the PEFT LoRA baseline (train-baseline); train it with DDP "
                            "(train.distributed: ddp, accelerate launch --multi_gpu)")
    asked = "train.distributed fsdp" if mode == "fsdp" else "accelerate launch with FSDP"
    if num_processes < 2:
        raise TrainingError(f"{asked} on 1 process shards nothing; launch 2 or more (accelerate launch "
                            "--num_processes N) or train without FSDP")
    return True


def make_accelerator(tc: Any, stage: int = 1) -> Any:
    """A fresh Accelerator for this run: FSDP2 (`choose_fsdp`) or DDP / one process. A second run in
    the same process (stage 1 then stage 2, tests) may change mixed precision or FSDP:
    AcceleratorState is a process-wide singleton, so it is cleared (the distributed PartialState
    stays) and ACCELERATE_USE_FSDP, which the Accelerator sets for a plugin, is put back as the
    launcher left it. Raises TrainingError (see choose_fsdp; an unsupported wrap policy)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState

    cpu = launched_on_cpu()
    fsdp = choose_fsdp(tc, stage, PartialState(cpu=cpu).num_processes)
    reset_accelerator_state()
    plugin = _fsdp_plugin() if fsdp else None
    with launcher_env_kept(fsdp):
        acc = Accelerator(cpu=cpu, gradient_accumulation_steps=tc.gradient_accumulation_steps,
                          mixed_precision=tc.mixed_precision, fsdp_plugin=plugin,
                          kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    if plugin is not None and not acc.is_fsdp2:  # CPU (MULTI_CPU): see the module docstring
        from accelerate.utils import DistributedType

        if acc.state.mixed_precision != "no":
            plugin.set_mixed_precision(acc.state.mixed_precision)
        acc.state.fsdp_plugin = plugin
        acc.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState leaves it on GPUs
    return acc


@contextlib.contextmanager
def launcher_env_kept(fsdp: bool) -> Iterator[None]:
    """While an Accelerator is made: ACCELERATE_USE_FSDP as `fsdp` says (without a plugin, accelerate
    would make an FSDP one from it), then back as the launcher left it (with a plugin, accelerate sets it)."""
    before = os.environ.get("ACCELERATE_USE_FSDP")
    if not fsdp:
        os.environ.pop("ACCELERATE_USE_FSDP", None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_USE_FSDP", None)
        else:
            os.environ["ACCELERATE_USE_FSDP"] = before


_LAUNCH_TYPE: list = []  # the distributed type of this process's launch, before any Accelerator changed it


def reset_accelerator_state() -> None:
    """Clear accelerate's process-wide AcceleratorState and GradientState for a new Accelerator (the
    distributed PartialState stays) and put PartialState's distributed type back to that of the
    launch: an Accelerator under FSDP sets it to FSDP, which a later DDP or evaluation Accelerator in
    the same process would otherwise inherit."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedType

    cpu = launched_on_cpu()
    state = PartialState(cpu=cpu)
    if not _LAUNCH_TYPE:
        guess = DistributedType.MULTI_CPU if cpu else DistributedType.MULTI_GPU
        _LAUNCH_TYPE.append(state.distributed_type if state.distributed_type != DistributedType.FSDP else guess)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    PartialState._shared_state["distributed_type"] = _LAUNCH_TYPE[0]


def _fsdp_plugin() -> Any:
    """accelerate's FSDP2 plugin, its settings from the launcher's FSDP_* variables (if any). The wrap
    policy is alter's (`set_wrap_units`): transformer-based or none given are fine, size-based is refused.
    cpu_ram_efficient_loading (accelerate launch's default: true) is turned off, which also sets
    FSDP_CPU_RAM_EFFICIENT_LOADING=False for transformers: every process loads the whole base model,
    checks its weights fingerprint and attaches the MTA layers (with it on, the processes other than
    the first would load empty weights)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=False)
    if plugin.auto_wrap_policy is size_based_auto_wrap_policy:
        raise TrainingError("FSDP auto wrap policy SIZE_BASED_WRAP is not supported: alter wraps each transformer "
                            "block and each MTA layer (use TRANSFORMER_BASED_WRAP or NO_WRAP)")
    return plugin


def is_fsdp(acc: Any) -> bool:
    """True when the accelerator trains under FSDP2."""
    return bool(getattr(acc, "is_fsdp2", False))


def set_wrap_units(acc: Any, model: torch.nn.Module) -> None:
    """Before `acc.prepare` under FSDP: the wrap units are the transformer blocks (the plugin's
    transformer_cls_names_to_wrap when given, else the model's `_no_split_modules`) and every MTA
    layer (see the module docstring). No-op without FSDP."""
    if not is_fsdp(acc):
        return
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = acc.state.fsdp_plugin
    names = list(plugin.transformer_cls_names_to_wrap or getattr(model, "_no_split_modules", None) or [])
    if any(isinstance(m, MTALayer) for m in model.modules()):
        names.append(MTALayer.__name__)
    plugin.auto_wrap_policy = transformer_auto_wrap_policy
    plugin.transformer_cls_names_to_wrap = list(dict.fromkeys(names))


def _is_dtensor(t: Any) -> bool:
    if not torch.distributed.is_available():  # builds without torch.distributed have no DTensor
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered in full (a collective: every process calls it), a plain tensor as it is."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_state(model: torch.nn.Module, keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The entries `keep(name)` of the model's state dict, gathered in full as contiguous CPU tensors
    (under FSDP a collective: every process calls it, and all get the same dict)."""
    return {k: full_tensor(v).detach().cpu().contiguous() for k, v in model.state_dict().items() if keep(k)}


def shard_like(target: Any, value: torch.Tensor) -> torch.Tensor:
    """A full tensor laid out as `target`: sharded like a DTensor target (each process keeps its own
    shard, no communication), as it is otherwise."""
    if _is_dtensor(target) and not _is_dtensor(value):
        from torch.distributed.tensor import distribute_tensor

        value = value.to(device=target.device, dtype=target.dtype)
        return distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)
    return value


def place_like(targets: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full tensors of `state` laid out as the model's entries `targets` (its state dict), by
    `shard_like`: for `load_state_dict` of full weights into a model under FSDP."""
    return {k: shard_like(targets.get(k), v) for k, v in state.items()}


@contextlib.contextmanager
def gathered_mta(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block the MTA layers hold their full weights (FSDP2 `unshard`, a collective: every
    process enters it), for summaries read outside forward (selector weights). No-op without FSDP."""
    units = []
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule) and isinstance(m, MTALayer)]
    with torch.no_grad():
        for m in units:
            m.unshard()
        try:
            yield
        finally:
            for m in units:
                m.reshard()


class FullOptimizerState:
    """An optimizer under FSDP seen as one process would see it: `state_dict()` with every DTensor
    state gathered in full (a collective), `load_state_dict(full)` sharding each state like its
    parameter. Keys and layout are those of `torch.optim.Optimizer.state_dict` (parameter indices)."""

    def __init__(self, optimizer: Any):
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        sd = self.optimizer.state_dict()
        state = {i: {k: full_tensor(v).cpu() if torch.is_tensor(v) else v for k, v in s.items()}
                 for i, s in sd["state"].items()}
        return {"state": state, "param_groups": sd["param_groups"]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]  # a per-element state (exp_avg, ...) is sharded as its parameter; `step` is not
            state[i] = {k: shard_like(p, v) if torch.is_tensor(v) and tuple(v.shape) == tuple(p.shape) else v
                        for k, v in s.items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


def save_fsdp_state(acc: Any, directory: Path, weights: dict[str, torch.Tensor], optimizer: Any,
                    loaders: list, custom: list) -> None:
    """state/ under FSDP, the files of `Accelerator.save_state` under DDP: model.safetensors (the
    full trained `weights`), optimizer.bin (full, `FullOptimizerState`), sampler, RNG (one file per
    process) and custom_checkpoint_<i>.pkl for `custom` (the objects registered for checkpointing,
    in order). Every process calls it (the optimizer is gathered); the main process writes."""
    from accelerate.checkpointing import save_accelerator_state, save_custom_state

    directory.mkdir(parents=True, exist_ok=True)
    save_accelerator_state(str(directory), [weights], [FullOptimizerState(optimizer)], [], loaders,
                           acc.process_index, acc.step, acc.scaler)
    for i, obj in enumerate(custom):
        save_custom_state(obj, str(directory), i)


def load_fsdp_state(acc: Any, directory: Path, optimizer: Any, loaders: list, custom: list) -> None:
    """Back from state/ (as `save_fsdp_state` or `Accelerator.save_state` wrote it) under FSDP: the
    optimizer (sharded like its parameters), sampler, this process's RNG, the custom objects. The
    model weights are the caller's (checkpoint.load_mta_weights / load_backbone_weights)."""
    from accelerate.checkpointing import load_accelerator_state, load_custom_state

    override = load_accelerator_state(str(directory), [], [FullOptimizerState(optimizer)], [], loaders,
                                      acc.process_index, acc.scaler, "cpu")
    acc.step = override.get("step", acc.step)
    for i, obj in enumerate(custom):
        load_custom_state(obj, str(directory), i)


class StopSignals:
    """While the loop runs (main thread): the first SIGINT/SIGTERM asks for a stop at the end of the
    current optimizer step (checkpoint, then TrainingInterrupted); a second one, or a signal after the
    launcher died, interrupts at once (KeyboardInterrupt). Under a launcher (`accelerate launch`,
    torchrun: LOCAL_RANK set) the worker asks the kernel for SIGTERM when its parent dies (Linux
    PR_SET_PDEATHSIG) and also checks its parent at every step, so no worker outlives the launcher."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.launcher = os.getppid() if "LOCAL_RANK" in os.environ else None
        self._previous: dict[int, Any] = {}

    def launcher_gone(self) -> bool:
        return self.launcher is not None and os.getppid() != self.launcher

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signum is not None or self.launcher_gone():
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if self.launcher is not None:
            _die_with_parent()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_exc: Any) -> None:
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def _die_with_parent() -> None:
    """Linux: deliver SIGTERM to this process when its parent (the launcher) dies. No-op elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def agreed_stop(acc: Any, signals: StopSignals) -> int:
    """The stop signal number if any rank was asked to stop (0 if none); every rank agrees, so all
    of them write the same checkpoint. Leaves at once (KeyboardInterrupt) when the launcher died."""
    if signals.launcher_gone():
        raise KeyboardInterrupt
    if acc.num_processes == 1:
        return signals.signum or 0
    asked = acc.reduce(torch.tensor([1 if signals.signum else 0], device=acc.device), reduction="sum")
    if int(asked.item()) == 0:
        return 0
    return signals.signum or 15  # a rank the signal did not reach stops as for SIGTERM
