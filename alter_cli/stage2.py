"""Stage 2 of ALTER: shared experts + gate network on a frozen stage-1 model (spec section 1, stage 2).

Wiring of the shared training loop: `train.run_training(cfg, 2, setup_model=wiring.setup_model,
extra_loss=wiring.extra_loss)` loads the stage-1 checkpoint, adds M shared experts and the gate to
every MTA layer (`inject.add_shared_experts`; freezing by `inject.set_trainable(model, 2, ...)` in
the loop), and, through forward hooks on the gate networks, collects the gate weights g ∈ R^{M+1}
of each training forward for the optional regulariser and the logged gate statistics.
Pure torch: no file I/O beyond loading the checkpoint through `checkpoint.load_checkpoint`.
"""

from __future__ import annotations

from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .config import GateFields, MTAConfig, Stage2MTAConfig
from .data import IGNORE_INDEX, TaskRegistry
from .inject import add_shared_experts
from .mta import MTALayer
from .train import ModelBundle

STAGE2_MTA_FIELDS = tuple(GateFields.model_fields)  # what stage 2 sets in the stage-1 MTA config


def stage2_mta_config(stage1: MTAConfig, options: Stage2MTAConfig) -> MTAConfig:
    """The stage-1 MTA config with the stage-2 fields (shared experts, gate) set from `options`;
    it is what the stage-2 checkpoint records, so `checkpoint.load_checkpoint` rebuilds the same layers."""
    return MTAConfig.model_validate(
        stage1.model_dump() | {k: getattr(options, k) for k in STAGE2_MTA_FIELDS}
    )


def build_stage2(cfg: Any) -> ModelBundle:
    """Load the stage-1 checkpoint `cfg.stage1` and add `cfg.mta.num_shared_experts` shared experts
    and the gate network to each of its MTA layers.

    Raises CheckpointError (missing, corrupt or mismatched checkpoint, or one that already has
    shared experts: stage 2 starts from a stage-1 checkpoint).
    """
    ck = load_checkpoint(cfg.stage1)
    if ck.mta_config is None:
        raise CheckpointError(f"checkpoint {str(cfg.stage1)!r} is a LoRA baseline; stage 2 starts from a stage-1 checkpoint")
    if ck.meta.get("has_shared_experts"):
        raise CheckpointError(
            f"checkpoint {str(cfg.stage1)!r} is a stage-{ck.stage} checkpoint with shared experts; "
            "stage 2 starts from a stage-1 checkpoint"
        )
    mta_config = stage2_mta_config(ck.mta_config, cfg.mta)
    add_shared_experts(ck.model, mta_config)
    return ModelBundle(ck.model, ck.tokenizer, ck.registry, mta_config, ck.base)


def gate_entropy(g: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of gate weights g (..., M+1) along the last axis, shape (...)."""
    return -(g * g.clamp_min(1e-12).log()).sum(-1)


class GateMonitor:
    """Collects the gate weights of every MTA layer in training forward passes.

    A forward hook on each layer's gate network keeps its output g (with graph) and the task ids of
    its rows while the model is in training mode. `after_forward(batch)` (called once per
    micro-batch, after the forward) selects the real tokens (attention mask for decoder-only models
    and encoders, target positions for a T5 decoder; pooled gates are per sample), adds them to the
    logging window and returns the regulariser (or None), then drops the kept tensors.

    regularizer: "none" | "load_balancing" (w·(M+1)·Σ_j ḡ_j², ḡ the mean gate weight over the
    batch's tokens; Fedus et al. 2021, arXiv:2101.03961 eq. 4 with dense routing, = w when all
    paths are used equally) | "entropy" (−w · mean per-token entropy). Averaged over MTA layers.
    """

    def __init__(self, model: torch.nn.Module, registry: TaskRegistry, regularizer: str = "none",
                 weight: float = 0.0):
        if regularizer not in ("none", "load_balancing", "entropy"):
            raise ValueError(f"unknown gate regularizer {regularizer!r}")
        self.registry, self.regularizer, self.weight = registry, regularizer, float(weight)
        self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, MTALayer) and m.gate_net is not None]
        if not layers:
            raise ValueError("the model has no gate networks (add shared experts first)")
        self.num_paths = layers[0][1].gate_net.num_paths
        self._captured: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self._handles = [layer.gate_net.register_forward_hook(self._hook(name, layer)) for name, layer in layers]
        self.reset()

    def _hook(self, name: str, layer: MTALayer):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            if module.training and layer._routing is not None:
                self._captured.append((name, output, layer._routing.ids_for(output.shape[0])))

        return hook

    def reset(self) -> None:
        """Start a new logging window."""
        t, p = len(self.registry), self.num_paths
        self._task_sum = torch.zeros(t, p, dtype=torch.float64)
        self._task_count = torch.zeros(t, dtype=torch.float64)
        self._entropy_sum = 0.0

    def _tokens(self, name: str, g: torch.Tensor, task_ids: torch.Tensor, batch: dict[str, torch.Tensor]):
        """Gate rows of real tokens (K, M+1) and their task ids (K,)."""
        if g.dim() == 2:  # pooled: one gate per sample
            return g, task_ids.to(g.device)
        n, length = g.shape[0], g.shape[1]
        mask = None
        if self.encoder_decoder and ".decoder." in f".{name}":
            labels = batch.get("labels")
            if labels is not None and labels.shape == (n, length):
                mask = labels != IGNORE_INDEX
        else:
            am = batch.get("attention_mask")
            if am is not None and am.shape == (n, length):
                mask = am.bool()
        tids = task_ids.to(g.device)[:, None].expand(n, length)
        if mask is None:
            return g.reshape(-1, g.shape[-1]), tids.reshape(-1)
        mask = mask.to(g.device)
        return g[mask], tids[mask]

    def after_forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Account the gates of the forward just run; the regulariser term to add to the loss, or None."""
        captured, self._captured = self._captured, []
        terms = []
        for name, g, tids in captured:
            rows, row_tasks = self._tokens(name, g, tids, batch)
            if rows.shape[0] == 0:
                continue
            ent = gate_entropy(rows.float())
            with torch.no_grad():
                cpu_tasks = row_tasks.cpu()
                self._task_sum.index_add_(0, cpu_tasks, rows.detach().double().cpu())
                self._task_count.index_add_(0, cpu_tasks, torch.ones(len(cpu_tasks), dtype=torch.float64))
                self._entropy_sum += float(ent.detach().double().sum())
            if self.regularizer == "load_balancing":
                terms.append(self.num_paths * rows.float().mean(0).pow(2).sum())
            elif self.regularizer == "entropy":
                terms.append(-ent.mean())
        if self.regularizer == "none" or not terms or self.weight == 0.0:
            return None
        return self.weight * torch.stack(terms).mean()

    def stats(self, reset: bool = True) -> dict[str, Any]:
        """Gate statistics of the window: gate_j (mean weight of path j, j = 0 the task path),
        gate_entropy (mean per-token entropy, nats) and task_gate (task -> mean weights per path)."""
        n = float(self._task_count.sum())
        if n == 0:
            return {}
        mean = self._task_sum.sum(0) / n
        out: dict[str, Any] = {f"gate_{j}": float(v) for j, v in enumerate(mean)}
        out["gate_entropy"] = self._entropy_sum / n
        out["task_gate"] = {
            name: [round(float(v), 6) for v in self._task_sum[t] / self._task_count[t]]
            for t, name in enumerate(self.registry.names) if self._task_count[t] > 0
        }
        if reset:
            self.reset()
        return out

    def remove(self) -> None:
        """Remove the hooks (after training)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._captured = []


class Stage2Wiring:
    """The stage-2 hooks of `train.run_training`: `setup_model` (build_stage2 + a GateMonitor),
    `extra_loss` (the gate regulariser) and `on_record` (window gate statistics on log steps)."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.bundle: ModelBundle | None = None
        self.monitor: GateMonitor | None = None

    def setup_model(self, cfg: Any) -> ModelBundle:
        self.bundle = build_stage2(cfg)
        self.monitor = GateMonitor(self.bundle.model, self.bundle.registry, cfg.mta.gate_regularizer,
                                   cfg.mta.gate_regularizer_weight)
        return self.bundle

    def extra_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return None if self.monitor is None else self.monitor.after_forward(batch)

    def on_record(self, record: dict[str, Any]) -> None:
        if self.monitor is not None and record.get("log"):
            record.update(self.monitor.stats())

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.remove()
