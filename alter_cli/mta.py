"""The Mixture-of-Task-Adapters (MTA) module: task experts, task weights selector, shared experts, gate.

Pure torch. Method: ALTER (arXiv:2309.11042) as given in the project's spec `alter.md` section 1.

Stage 1 (one MTA layer at the FFN of a transformer block, input x = the normalised hidden state the
FFN reads, shape (N, ..., d)):
    α_t = softmax(w_t / τ) ∈ R^E,   o₀ = Σ_k α_{t,k} E_k(x)                        (selector mixture)
Stage 2 (after `add_shared_experts`):
    o_j = S_j(x), g = softmax(W₂ ReLU(W₁ [o₀; o₁; …; o_M])) ∈ R^{M+1},  y = g₀ o₀ + Σ_j g_j o_j
    (options: the gate may read x instead of the paths, see the task, be capped; `GateNetwork`)
All E (or M) experts run as one batched tensor operation on stacked weights; there is no Python loop
over experts. Task ids reach the layers through `task_context` (no model.forward kwargs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .experts import (  # noqa: F401  (re-exported: the expert kinds live in experts.py)
    ACTIVATIONS,
    EXPERT_KINDS,
    REPLACES_FFN,
    BottleneckExperts,
    FFNCopyExperts,
    FFNWeights,
    HydraLoRAExperts,
    LoRAExperts,
    build_experts,
)

GATE_TASK_MODES = ("none", "bias", "embedding", "task_only")
GATE_INPUTS = ("paths", "hidden")


class GateNetwork(nn.Module):
    """The stage-2 gate g ∈ R^{M+1} over the paths [o₀; o₁; …; o_M] (spec section 1, stage 2), and how
    it sees the task t of each sample (`task`; the spec's gate sees it only through o₀):

    - "none" (spec): g = softmax(W₂ ReLU(W₁ [o₀; …; o_M]))
    - "bias": g = softmax(W₂ ReLU(W₁ [o₀; …; o_M]) + b_t), a learned per-task logit bias b_t ∈ R^{M+1}
      (zero at the start)
    - "embedding": g = softmax(W₂ ReLU(W₁ [o₀; …; o_M; e_t])), a learned task embedding e_t ∈ R^{hidden}
      joined to the gate input (the task-embedding gate of MOELoRA, Liu et al. 2023, arXiv:2310.18339)
    - "task_only": g = softmax(b_t), one learned logit vector per task: token-independent, no W₁/W₂
      (the stage-2 analogue of stage 1's selector; b_t starts at (init_bias, 0, …, 0)).

    W₂ starts at zero with bias (init_bias, 0, …, 0), so in every mode g starts as the same constant
    softmax of that bias for every task: init_bias > 0 favours the task path o₀.

    inputs: what W₁ reads — "paths" (spec): the path outputs [o₀; …; o_M], W₁ ∈ R^{hidden×(M+1)d};
    "hidden": the layer's input x ∈ R^d (the normalised hidden state the FFN reads), W₁ ∈
    R^{hidden×d}, as the router of a sparse mixture of experts reads the token (Shazeer et al. 2017,
    arXiv:1701.06538; Fedus et al. 2021, arXiv:2101.03961). "hidden" has (M+1)× fewer W₁ weights
    and an input whose scale does not grow as the shared experts train (x is normalised), so the
    gate cannot harden through the size of its input.

    logit_cap c (optional): the token part z = W₂ ReLU(W₁ …) is soft-capped to c·tanh(z/c) ∈ (−c, c)
    before the task bias b_t is added (logit soft-capping as in Gemma 2, arXiv:2408.00118 §2). The
    token part alone then cannot saturate the softmax (each g_j ≥ 1/(1 + M e^{2c}) without a bias), so
    the gate keeps a gradient, and b_t, which is not capped, can always outvote the tokens: with it
    the per-task gates can differ even when the token gate would otherwise harden onto one path.
    At the start g = softmax(c·tanh(init_bias/c), 0, …, 0). Not for "task_only" (no token part).
    """

    def __init__(self, num_paths: int, d_model: int, hidden: int, init_bias: float, num_tasks: int = 1,
                 task: str = "none", logit_cap: float | None = None, inputs: str = "paths"):
        super().__init__()
        if inputs not in GATE_INPUTS:
            raise ValueError(f"gate inputs must be one of {', '.join(GATE_INPUTS)}, got {inputs!r}")
        if task not in GATE_TASK_MODES:
            raise ValueError(f"gate task mode must be one of {', '.join(GATE_TASK_MODES)}, got {task!r}")
        if logit_cap is not None and not (logit_cap > 0 and math.isfinite(logit_cap)):
            raise ValueError(f"gate logit cap must be a positive finite number, got {logit_cap!r}")
        if inputs == "hidden" and task == "task_only":
            raise ValueError("gate inputs 'hidden' feed the gate's token part; gate task mode 'task_only' has none")
        if logit_cap is not None and task == "task_only":
            raise ValueError("a gate logit cap caps the token part of the gate; gate task mode 'task_only' has none")
        self.num_paths, self.task_mode, self.logit_cap, self.inputs = num_paths, task, logit_cap, inputs
        if task == "task_only":
            logits = torch.zeros(num_tasks, num_paths)
            logits[:, 0] = float(init_bias)
            self.task_logits = nn.Parameter(logits)
            return
        extra = hidden if task == "embedding" else 0
        width = num_paths * d_model if inputs == "paths" else d_model
        self.w1 = nn.Linear(width + extra, hidden)
        self.w2 = nn.Linear(hidden, num_paths)
        nn.init.zeros_(self.w2.weight)
        with torch.no_grad():
            self.w2.bias.zero_()
            self.w2.bias[0] = init_bias
        if task == "bias":
            self.task_bias = nn.Parameter(torch.zeros(num_tasks, num_paths))
        elif task == "embedding":
            self.task_embedding = nn.Parameter(torch.randn(num_tasks, hidden))

    def forward(self, paths: torch.Tensor, task_ids: torch.Tensor | None = None,
                hidden: torch.Tensor | None = None) -> torch.Tensor:
        """paths (N, ..., M+1, d), task_ids (N,), hidden x (N, ..., d) (read with inputs "hidden")
        -> gate weights (N, ..., M+1), summing to 1.
        Raises ValueError when a task-aware mode gets no task ids or inputs "hidden" no hidden state."""
        lead = paths.shape[:-2]
        if self.task_mode != "none" and task_ids is None:
            raise ValueError(f"gate task mode {self.task_mode!r} needs the task ids")
        if self.inputs == "hidden" and hidden is None:  # (never with task_only: refused in __init__)
            raise ValueError("gate inputs 'hidden' needs the layer input x")

        def per_sample(t: torch.Tensor) -> torch.Tensor:  # (N, k) -> (N, 1, …, 1, k) broadcastable over lead
            return t.reshape(t.shape[0], *([1] * (len(lead) - 1)), t.shape[-1])

        if self.task_mode == "task_only":
            logits = per_sample(self.task_logits[task_ids]).expand(*lead, self.num_paths)
            return torch.softmax(logits.to(paths.dtype), dim=-1)
        inp = paths.flatten(-2) if self.inputs == "paths" else hidden.to(paths.dtype)
        if self.task_mode == "embedding":
            e = per_sample(self.task_embedding[task_ids].to(inp.dtype)).expand(*lead, self.task_embedding.shape[-1])
            inp = torch.cat([inp, e], dim=-1)
        logits = self.w2(F.relu(self.w1(inp)))
        if self.logit_cap is not None:
            logits = self.logit_cap * torch.tanh(logits / self.logit_cap)
        if self.task_mode == "bias":
            logits = logits + per_sample(self.task_bias[task_ids].to(logits.dtype))
        return torch.softmax(logits, dim=-1)


class RoutingState:
    """Per-call routing information shared by all MTA layers of a model inside `task_context`."""

    def __init__(self, task_ids: torch.Tensor):
        if task_ids.dim() != 1:
            raise ValueError(f"task_ids must have shape (B,), got {tuple(task_ids.shape)}")
        self.task_ids = task_ids.long()
        self.pooled_gates: dict[int, torch.Tensor] = {}
        self.token_mask: torch.Tensor | None = None  # (B, L) attention mask of the last model call

    def mask_for(self, n: int, length: int) -> torch.Tensor | None:
        """The attention mask as (n, length) for a hidden batch of n rows (beams: repeat_interleave),
        or None when there is none or it does not fit (e.g. a T5 decoder's own positions)."""
        m = self.token_mask
        if m is None or m.dim() != 2:
            return None
        if m.shape[0] != n and m.shape[0] > 0 and n % m.shape[0] == 0:
            m = m.repeat_interleave(n // m.shape[0], 0)
        return m if tuple(m.shape) == (n, length) else None

    def ids_for(self, n: int) -> torch.Tensor:
        """Task ids for a hidden batch of n rows: B, or k·B under beam search (repeat_interleave)."""
        b = self.task_ids.shape[0]
        if n == b:
            return self.task_ids
        if b > 0 and n % b == 0:
            return self.task_ids.repeat_interleave(n // b)
        raise RuntimeError(f"MTA: hidden batch of {n} rows does not match {b} task ids (nor a multiple)")


class MTALayer(nn.Module):
    """One MTA module: E task experts + task weights selector (+ stage-2 shared experts and gate).

    Args:
        d_model: hidden size d. num_tasks: T. num_experts: E. expert: bottleneck | ffn_copy | lora |
        hydra_lora (`experts.py`); lora_alpha: LoRA scale s = lora_alpha / rank (None: s = 1).
        task_to_experts: for each task id, its own expert indices (selector init own_init vs
        other_init, before the /τ softmax; reference 0.22 / 0.20, τ = 0.1).
        ffn / get_ffn: the block's FFN (needed by ffn_copy and lora).
    forward(x) with x (N, ..., d) returns the mixture output (N, ..., d); task ids come from the
    active `task_context` (RuntimeError when none is active).
    """

    def __init__(
        self,
        d_model: int,
        num_tasks: int,
        num_experts: int,
        task_to_experts: list[list[int]],
        expert: str = "bottleneck",
        rank: int = 64,
        activation: str = "relu",
        temperature: float = 0.1,
        own_init: float = 0.22,
        other_init: float = 0.20,
        ffn: FFNWeights | None = None,
        get_ffn: Callable[[], FFNWeights] | None = None,
        lora_alpha: float | None = None,
    ):
        super().__init__()
        if len(task_to_experts) != num_tasks:
            raise ValueError(f"task_to_experts has {len(task_to_experts)} rows for {num_tasks} tasks")
        self.d_model, self.num_tasks, self.num_experts = d_model, num_tasks, num_experts
        self.expert_kind, self.temperature, self.rank, self.activation = expert, temperature, rank, activation
        self.experts: nn.Module = build_experts(expert, num_experts, d_model, rank, activation, ffn, get_ffn, lora_alpha)
        self._get_ffn = get_ffn  # for LoRA-form shared experts (stage 2)
        self.lora_scale = 1.0 if lora_alpha is None else float(lora_alpha) / rank
        init = torch.full((num_tasks, num_experts), float(other_init))
        for t, own in enumerate(task_to_experts):
            init[t, list(own)] = float(own_init)
        self.selector = nn.Parameter(init)
        self.task_to_experts = [list(own) for own in task_to_experts]
        self.shared: BottleneckExperts | LoRAExperts | None = None
        self.gate_net: GateNetwork | None = None
        self.gate_mode = "token"
        self.gate_combine = "convex"
        self.gate_task = "none"
        self.last_gate: torch.Tensor | None = None
        self.replaces_ffn = False  # set by inject.attach_mta
        self.reads_attention_mask = True  # False in a T5 decoder (the mask is the encoder's); set by attach_mta
        self._routing: RoutingState | None = None

    # -- stage 1 ---------------------------------------------------------------------------------
    def alpha(self) -> torch.Tensor:
        """Task weights α = softmax(w/τ) for all tasks, shape (T, E)."""
        return torch.softmax(self.selector / self.temperature, dim=-1)

    def own_mask(self) -> torch.Tensor:
        """(T, E) float mask, 1 where expert k is one of task t's own experts."""
        mask = torch.zeros(self.num_tasks, self.num_experts)
        for t, own in enumerate(self.task_to_experts):
            mask[t, own] = 1.0
        return mask

    def task_mixture(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """o₀ = Σ_k α_{t,k} E_k(x) for x (N, ..., d), task_ids (N,) -> (N, ..., d).

        α is computed for all T rows and indexed, so every selector row takes part in the graph (rows
        of tasks absent from the batch get an exact zero gradient: no DDP unused-parameter error)."""
        return self.experts(x, self.alpha()[task_ids])

    # -- stage 2 ---------------------------------------------------------------------------------
    def add_shared_experts(
        self,
        num_shared: int,
        gate: str = "token",
        rank: int | None = None,
        hidden: int = 64,
        init_bias: float = 2.0,
        activation: str | None = None,
        combine: str = "convex",
        task: str = "none",
        logit_cap: float | None = None,
        inputs: str = "paths",
        kind: str = "bottleneck",
    ) -> None:
        """Add M shared experts (zero-initialised up-projections) and the gate network.

        kind: "bottleneck" (d→r→d adapters beside the FFN, r = rank or the layer's rank) or "lora"
          (each a rank-r LoRA on the block's FFN projections, contributing FFN_j(x) − FFN(x),
          `LoRAExperts.expert_outputs`; LoRA scale s that of the task experts, lora_alpha / rank).

        gate: "token" (gate per token, default) or "pooled" (one gate per sample from the mean over
        the real tokens of the call — the model call's attention mask, caught by `task_context`;
        all positions in a T5 decoder — reused for single-token decoding steps in the same
        `task_context`).
        combine: how the gate weights g ∈ R^{M+1} mix the paths —
          "convex" (spec, reference code): y = g₀·o₀ + Σ_j g_j·o_j;
          "residual": y = o₀ + Σ_j g_j·o_j, the stage-1 task mixture kept at weight 1 and g₀ the
          weight of "no shared expert". With zero-initialised shared experts the layer then starts
          exactly at the stage-1 output for any init_bias, and a shared expert is not penalised for
          taking weight from o₀ (with "convex" any weight moved off o₀ first shrinks the trained
          stage-1 output, which drives g₀ → 1: see the README, "alter on BBC News: comparison").
        task: how the gate sees the sample's task — "none" (spec), "bias", "embedding", "task_only"
          (`GateNetwork`). Every mode starts at the same gate for every task, so with "residual"
          the layer starts exactly at the stage-1 output in every mode.
        logit_cap: soft cap c of the gate's token logits (`GateNetwork`; None: no cap).
        inputs: what the gate reads — "paths" (spec: [o₀; …; o_M]) or "hidden" (the layer input x);
          `GateNetwork`.
        Raises ValueError for M < 1, an unknown kind, gate mode, combine, task mode or inputs, a cap that is not
        positive and finite or given with task "task_only", or when shared experts already exist.
        """
        if num_shared < 1:
            raise ValueError(f"num_shared must be >= 1, got {num_shared}")
        if gate not in ("token", "pooled"):
            raise ValueError(f"gate must be 'token' or 'pooled', got {gate!r}")
        if combine not in ("convex", "residual"):
            raise ValueError(f"combine must be 'convex' or 'residual', got {combine!r}")
        if self.shared is not None:
            raise ValueError("shared experts already added")
        if kind not in ("bottleneck", "lora"):
            raise ValueError(f"shared expert kind must be 'bottleneck' or 'lora', got {kind!r}")
        dev = self.selector.device
        r = rank or self.rank
        if kind == "lora":
            if self._get_ffn is None:
                raise ValueError("lora shared experts need the block's FFN weights")
            self.shared = LoRAExperts(num_shared, self._get_ffn(), r, self._get_ffn, self.lora_scale * r).to(dev)
        else:
            self.shared = BottleneckExperts(num_shared, self.d_model, r, activation or self.activation).to(dev)
        self.gate_net = GateNetwork(num_shared + 1, self.d_model, hidden, init_bias, self.num_tasks, task,
                                    logit_cap, inputs).to(dev)
        self.gate_mode = gate
        self.gate_combine = combine
        self.gate_task = task

    def _gate(self, paths: torch.Tensor, task_ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """paths (N, ..., M+1, d), task_ids (N,), x (N, ..., d) the layer input -> gate weights
        broadcastable to paths[..., :1]."""
        assert self.gate_net is not None
        if self.gate_mode == "token":
            return self.gate_net(paths, task_ids, x)
        key = id(self)
        routing = self._routing
        seq_dims = tuple(range(1, paths.dim() - 2))
        if routing is not None and paths.dim() >= 4 and paths.shape[1] == 1 and key in routing.pooled_gates:
            g = routing.pooled_gates[key]
            g = g.repeat_interleave(paths.shape[0] // g.shape[0], 0) if g.shape[0] != paths.shape[0] else g
        else:
            if seq_dims:
                g = self.gate_net(self._pool(paths, seq_dims), task_ids, self._pool(x, seq_dims))
            else:
                g = self.gate_net(paths, task_ids, x)
            if routing is not None:
                routing.pooled_gates[key] = g
        return g.reshape(g.shape[0], *([1] * len(seq_dims)), g.shape[-1])

    def _pool(self, paths: torch.Tensor, seq_dims: tuple[int, ...]) -> torch.Tensor:
        """Mean of paths (N, L, M+1, d) (or of x (N, L, d)) over the real tokens of each sample (the
        model call's attention mask, when this layer reads it and it fits), else over all positions
        -> (N, M+1, d) (or (N, d))."""
        routing = self._routing
        mask = None
        if routing is not None and self.reads_attention_mask and len(seq_dims) == 1:
            mask = routing.mask_for(paths.shape[0], paths.shape[1])
        if mask is None:
            return paths.mean(dim=seq_dims)
        w = mask.to(device=paths.device, dtype=paths.dtype)
        w = w.reshape(*w.shape, *([1] * (paths.dim() - 2)))
        return (paths * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._routing is None:
            raise RuntimeError(
                "MTA layer called outside `alter_cli.mta.task_context(model, task_ids)`: no task ids"
            )
        task_ids = self._routing.ids_for(x.shape[0]).to(x.device)
        in_dtype = x.dtype
        if x.dtype != self.selector.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.selector.dtype)  # e.g. a bf16 backbone with fp32 MTA weights, no autocast
        out = self._mix(x, task_ids).to(in_dtype)
        # never a view of another tensor: under FSDP2 (a layer is a fully_shard unit) an in-place op on a
        # returned view would drop the unit's pre-backward hook (torch warns on every forward)
        return out.clone() if out._is_view() else out

    def _mix(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        o0 = self.task_mixture(x, task_ids)
        if self.shared is None:
            return o0
        shared_out = self.shared.expert_outputs(x)  # o_j = S_j(x), (N, ..., M, d)
        paths = torch.cat([o0.unsqueeze(-2), shared_out.to(o0.dtype)], dim=-2)
        g = self._gate(paths, task_ids, x)
        self.last_gate = g.detach()
        g = g.unsqueeze(-1).to(paths.dtype)
        if self.gate_combine == "residual":  # y = o₀ + Σ_{j≥1} g_j o_j
            return o0 + (g[..., 1:, :] * paths[..., 1:, :]).sum(-2)
        return (g * paths).sum(-2)  # y = g₀ o₀ + Σ_{j≥1} g_j o_j

    def gate_stats(self) -> dict[str, float] | None:
        """Mean gate weight per path and mean entropy (nats) of the last forward, or None."""
        if self.last_gate is None:
            return None
        g = self.last_gate.float().reshape(-1, self.last_gate.shape[-1])
        ent = -(g * g.clamp_min(1e-12).log()).sum(-1).mean()
        stats = {f"gate_{j}": float(v) for j, v in enumerate(g.mean(0))}
        stats["gate_entropy"] = float(ent)
        return stats


def mta_layers(model: nn.Module) -> list[MTALayer]:
    """All MTA layers of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, MTALayer)]


def alpha_per_task(model: nn.Module, task_names: list[str]) -> dict[str, list[float]]:
    """Selector weights α_t = softmax(w_t/τ) ∈ R^E of every task, averaged over the MTA layers
    (task name -> E floats, rounded to 1e-6); empty when the model has no MTA layers."""
    layers = mta_layers(model)
    if not layers:
        return {}
    with torch.no_grad():
        a = torch.stack([layer.alpha().float().cpu() for layer in layers]).mean(0)
    return {name: [round(float(v), 6) for v in row] for name, row in zip(task_names, a, strict=True)}


@contextlib.contextmanager
def task_context(model: nn.Module, task_ids: torch.Tensor) -> Iterator[RoutingState]:
    """Route per-sample task ids (LongTensor (B,)) to every MTA layer of `model` for the calls made
    inside the block (`model(**batch)` or `model.generate(...)`; beams handled by repeat_interleave).

    Raises RuntimeError when the model has no MTA layers.
    """
    layers = mta_layers(model)
    if not layers:
        raise RuntimeError("task_context: the model has no MTA layers (attach them with inject.attach_mta)")
    state = RoutingState(task_ids)
    previous = [layer._routing for layer in layers]
    for layer in layers:
        layer._routing = state

    def keep_mask(_module: nn.Module, _args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        state.token_mask = mask if isinstance(mask, torch.Tensor) else None

    hooked = [model]
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        hooked.append(model.get_encoder())  # generate() calls the encoder directly
    handles = [m.register_forward_pre_hook(keep_mask, with_kwargs=True) for m in hooked]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()
        for layer, prev in zip(layers, previous, strict=True):
            layer._routing = prev
