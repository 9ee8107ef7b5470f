"""Per-task LoRA: one PEFT LoRA adapter per task, routed by each sample's task (issue 11 §6).

The specialisation ceiling of a multi-task comparison: T adapters, each of the multi-task
baseline's size (T× its parameters), adapter t trained on task t's examples only
(`alter train-baseline --per-task`). The checkpoint folder holds ``alter_baseline.json`` (method
``lora_per_task``) and one ordinary PEFT adapter folder per task under ``adapters/<task>/``.

At inference the adapters share one base model: :func:`load_task_adapters` loads them as named
PEFT adapters (``PeftModel.from_pretrained`` + ``load_adapter``), and :func:`task_routing` sends
each sample of a mixed-task batch through its own task's adapter with PEFT's mixed-batch LoRA
forward (the ``adapter_names`` argument of ``LoraLayer.forward``, PEFT's "inference with different
LoRA adapters in the same batch"), given to every LoRA layer by a forward pre-hook; with beam search
(batch B·k) each sample's adapter name is repeated k times, as HF ``generate`` repeats the rows.
The context is attached to the model as ``alter_task_context``, which
``generation.default_task_context`` uses, so `alter eval` and `alter predict` route without knowing
the method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

METHOD = "lora_per_task"
ADAPTERS_DIR = "adapters"
CONTEXT_ATTR = "alter_task_context"


def adapter_name(task: str) -> str:
    """PEFT adapter name of a task's adapter (PEFT names must not contain '.')."""
    return "task_" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)


def task_routing(names: Sequence[str]):
    """A task context ``(model, task_ids) -> context manager``: inside it every LoRA layer of the model
    computes each sample with the adapter ``names[task_id]``. ``task_ids``: LongTensor (B,)."""
    from peft.tuners.lora import LoraLayer

    @contextlib.contextmanager
    def context(model: Any, task_ids: Any) -> Iterator[None]:
        per_sample = [names[int(t)] for t in task_ids.tolist()]

        def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            rows = (args[0] if args else kwargs["x"]).shape[0]
            if rows % len(per_sample):
                raise RuntimeError(f"per-task LoRA: a batch of {rows} rows for {len(per_sample)} samples")
            reps = rows // len(per_sample)
            return args, kwargs | {"adapter_names": [n for n in per_sample for _ in range(reps)]}

        handles = [m.register_forward_pre_hook(hook, with_kwargs=True)
                   for m in model.modules() if isinstance(m, LoraLayer)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    return context


def load_task_adapters(base_model: Any, folders: Mapping[str, str | Path], task_order: Sequence[str]) -> Any:
    """Wrap ``base_model`` with the PEFT adapters of ``folders`` (task → adapter folder), named by
    :func:`adapter_name`, frozen, with the routing context for ``task_order`` (the registry's task
    order, so that task id i uses the adapter of ``task_order[i]``) attached. Raises KeyError for a
    task without a folder and PEFT's errors for a bad adapter."""
    from peft import PeftModel

    from .quiet import peft_quietly

    missing = [t for t in task_order if t not in folders]
    if missing:
        raise KeyError(f"no adapter for task {missing[0]!r}")
    first, *rest = task_order
    with peft_quietly():
        model = PeftModel.from_pretrained(base_model, str(folders[first]), adapter_name=adapter_name(first),
                                          is_trainable=False)
    for task in rest:
        model.load_adapter(str(folders[task]), adapter_name=adapter_name(task), is_trainable=False)
    model.requires_grad_(False)
    setattr(model, CONTEXT_ATTR, task_routing([adapter_name(t) for t in task_order]))
    return model
