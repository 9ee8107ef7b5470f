"""The Mixture-of-Task-Adapters (MTA) module: task experts, task weights selector, shared experts, gate.

Pure torch. Method: ALTER (arXiv:2309.11042) as given in the project's spec `alter.md` section 1.

Stage 1 (one MTA layer at the FFN of a transformer block, input x = the normalised hidden state the
FFN reads, shape (N, ..., d)):
    α_t = softmax(w_t / τ) ∈ R^E,   o₀ = Σ_k α_{t,k} E_k(x)                        (selector mixture)
Stage 2 (after `add_shared_experts`):
    o_j = S_j(x), g = softmax(W₂ ReLU(W₁ [o₀; o₁; …; o_M])) ∈ R^{M+1},  y = g₀ o₀ + Σ_j g_j o_j
All E (or M) experts run as one batched tensor operation on stacked weights; there is no Python loop
over experts. Task ids reach the layers through `task_context` (no model.forward kwargs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


@dataclass
class FFNWeights:
    """A view of a pretrained FFN in one canonical form (weights as nn.Linear stores them).

    plain:  FFN(x) = act(x W_inᵀ + b_in) W_outᵀ + b_out
    gated:  FFN(x) = (act(x W_gateᵀ + b_gate) ⊙ (x W_inᵀ + b_in)) W_outᵀ + b_out
    Shapes: w_in, w_gate (f, d); w_out (d, f); biases (f,) / (d,) or None.
    """

    w_in: torch.Tensor
    w_out: torch.Tensor
    act: Callable[[torch.Tensor], torch.Tensor]
    w_gate: torch.Tensor | None = None
    b_in: torch.Tensor | None = None
    b_gate: torch.Tensor | None = None
    b_out: torch.Tensor | None = None

    @property
    def gated(self) -> bool:
        return self.w_gate is not None


def _expand_alpha(alpha: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, E) per-sample weights -> (N, 1, …, 1, E) broadcastable against x[..., None, :] rows."""
    return alpha.reshape(alpha.shape[0], *([1] * (x.dim() - 2)), alpha.shape[1])


class BottleneckExperts(nn.Module):
    """E bottleneck adapters d→r→d (Houlsby/Pfeiffer), stacked: down (E, d, r), up (E, r, d).

    `forward(x, weights)` returns Σ_k weights_k · up_k(act(down_k(x))) for x (N, ..., d) and
    weights (N, E), as two matmuls over the flattened (E·r) axis. Up-projections start at zero so
    the mixture output is exactly 0 at initialisation.
    """

    def __init__(self, num_experts: int, d_model: int, rank: int, activation: str = "relu"):
        super().__init__()
        self.num_experts, self.rank, self.activation = num_experts, rank, activation
        self.down = nn.Parameter(torch.empty(num_experts, d_model, rank))
        self.down_bias = nn.Parameter(torch.zeros(num_experts, rank))
        self.up = nn.Parameter(torch.zeros(num_experts, rank, d_model))
        self.up_bias = nn.Parameter(torch.zeros(num_experts, d_model))
        bound = 1.0 / math.sqrt(d_model)
        nn.init.uniform_(self.down, -bound, bound)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's output, shape (N, ..., E, d)."""
        h = ACTIVATIONS[self.activation](torch.einsum("...d,edr->...er", x, self.down) + self.down_bias)
        return torch.einsum("...er,erd->...ed", h, self.up) + self.up_bias

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        E, r = self.num_experts, self.rank
        d = x.shape[-1]
        down = self.down.permute(1, 0, 2).reshape(d, E * r)
        h = ACTIVATIONS[self.activation](x @ down + self.down_bias.reshape(E * r))
        w = _expand_alpha(weights, x).to(h.dtype)
        h = (h.unflatten(-1, (E, r)) * w[..., None]).flatten(-2)
        return h @ self.up.reshape(E * r, d) + w @ self.up_bias.to(h.dtype)


class FFNCopyExperts(nn.Module):
    """E full copies of the block's pretrained FFN (the reference code's experts), stacked (E, f, d)."""

    def __init__(self, num_experts: int, ffn: FFNWeights):
        super().__init__()
        self.num_experts, self.act = num_experts, ffn.act

        def stack(t: torch.Tensor | None) -> nn.Parameter | None:
            if t is None:
                return None
            return nn.Parameter(t.detach().clone().unsqueeze(0).repeat(num_experts, *([1] * t.dim())))

        self.w_in, self.w_out = stack(ffn.w_in), stack(ffn.w_out)
        self.w_gate, self.b_in = stack(ffn.w_gate), stack(ffn.b_in)
        self.b_gate, self.b_out = stack(ffn.b_gate), stack(ffn.b_out)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("...d,efd->...ef", x, self.w_in)
        if self.b_in is not None:
            h = h + self.b_in
        if self.w_gate is not None:
            g = torch.einsum("...d,efd->...ef", x, self.w_gate)
            if self.b_gate is not None:
                g = g + self.b_gate
            h = self.act(g) * h
        else:
            h = self.act(h)
        w = _expand_alpha(weights, x).to(h.dtype)
        y = torch.einsum("...ef,edf->...d", h * w[..., None], self.w_out)
        if self.b_out is not None:
            y = y + w @ self.b_out
        return y


class LoRAExperts(nn.Module):
    """E low-rank deltas on the FFN's projections: expert k is the FFN with W + B_k A_k on each of
    its projections (A (E, r, in) random, B (E, out, r) zero, scale 1). Returns Σ_k weights_k FFN_k(x),
    which equals FFN(x) at initialisation. The base FFN weights are read, not copied or trained."""

    def __init__(self, num_experts: int, ffn: FFNWeights, rank: int, get_ffn: Callable[[], FFNWeights]):
        super().__init__()
        self.num_experts, self._get_ffn = num_experts, get_ffn
        f, d = ffn.w_in.shape
        names = ["in", "out"] + (["gate"] if ffn.gated else [])
        dims = {"in": (d, f), "gate": (d, f), "out": (f, d)}
        for n in names:
            i, o = dims[n]
            a = torch.empty(num_experts, rank, i)
            nn.init.uniform_(a, -1.0 / math.sqrt(i), 1.0 / math.sqrt(i))
            self.register_parameter(f"lora_A_{n}", nn.Parameter(a))
            self.register_parameter(f"lora_B_{n}", nn.Parameter(torch.zeros(num_experts, o, rank)))

    def _proj(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, name: str, per_expert: bool):
        A, B = getattr(self, f"lora_A_{name}"), getattr(self, f"lora_B_{name}")
        if per_expert:  # x (..., E, i)
            base = x @ w.t().to(x.dtype)
            delta = torch.einsum("...ei,eri->...er", x, A)
        else:  # x (..., i), shared base projection computed once
            base = (x @ w.t().to(x.dtype)).unsqueeze(-2)
            delta = torch.einsum("...i,eri->...er", x, A)
        out = base + torch.einsum("...er,eor->...eo", delta, B)
        return out if b is None else out + b

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ffn = self._get_ffn()
        h = self._proj(x, ffn.w_in, ffn.b_in, "in", per_expert=False)
        if ffn.gated:
            h = ffn.act(self._proj(x, ffn.w_gate, ffn.b_gate, "gate", per_expert=False)) * h
        else:
            h = ffn.act(h)
        w = _expand_alpha(weights, x).to(h.dtype)
        y = self._proj(h * w[..., None], ffn.w_out, None, "out", per_expert=True).sum(-2)
        return y if ffn.b_out is None else y + ffn.b_out


class GateNetwork(nn.Module):
    """g = softmax(W₂ ReLU(W₁ [o₀; o₁; …; o_M])) ∈ R^{M+1} (spec section 1, stage 2).

    W₂ starts at zero with bias (init_bias, 0, …, 0), so at initialisation g is the constant
    softmax of that bias: init_bias > 0 favours the task path o₀.
    """

    def __init__(self, num_paths: int, d_model: int, hidden: int, init_bias: float):
        super().__init__()
        self.w1 = nn.Linear(num_paths * d_model, hidden)
        self.w2 = nn.Linear(hidden, num_paths)
        nn.init.zeros_(self.w2.weight)
        with torch.no_grad():
            self.w2.bias.zero_()
            self.w2.bias[0] = init_bias

    def forward(self, paths: torch.Tensor) -> torch.Tensor:
        """paths (..., M+1, d) -> gate weights (..., M+1), summing to 1."""
        return torch.softmax(self.w2(F.relu(self.w1(paths.flatten(-2)))), dim=-1)


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
        d_model: hidden size d. num_tasks: T. num_experts: E. expert: bottleneck | ffn_copy | lora.
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
    ):
        super().__init__()
        if len(task_to_experts) != num_tasks:
            raise ValueError(f"task_to_experts has {len(task_to_experts)} rows for {num_tasks} tasks")
        self.d_model, self.num_tasks, self.num_experts = d_model, num_tasks, num_experts
        self.expert_kind, self.temperature, self.rank, self.activation = expert, temperature, rank, activation
        if expert == "bottleneck":
            self.experts: nn.Module = BottleneckExperts(num_experts, d_model, rank, activation)
        elif expert == "ffn_copy":
            if ffn is None:
                raise ValueError("ffn_copy experts need the block's FFN weights")
            self.experts = FFNCopyExperts(num_experts, ffn)
        elif expert == "lora":
            if ffn is None or get_ffn is None:
                raise ValueError("lora experts need the block's FFN weights")
            self.experts = LoRAExperts(num_experts, ffn, rank, get_ffn)
        else:
            raise ValueError(f"unknown expert kind {expert!r} (bottleneck, ffn_copy, lora)")
        init = torch.full((num_tasks, num_experts), float(other_init))
        for t, own in enumerate(task_to_experts):
            init[t, list(own)] = float(own_init)
        self.selector = nn.Parameter(init)
        self.task_to_experts = [list(own) for own in task_to_experts]
        self.shared: BottleneckExperts | None = None
        self.gate_net: GateNetwork | None = None
        self.gate_mode = "token"
        self.gate_combine = "convex"
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
    ) -> None:
        """Add M shared bottleneck experts (zero-initialised up-projections) and the gate network.

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
        Raises ValueError for M < 1, an unknown gate mode or combine, or when shared experts already exist.
        """
        if num_shared < 1:
            raise ValueError(f"num_shared must be >= 1, got {num_shared}")
        if gate not in ("token", "pooled"):
            raise ValueError(f"gate must be 'token' or 'pooled', got {gate!r}")
        if combine not in ("convex", "residual"):
            raise ValueError(f"combine must be 'convex' or 'residual', got {combine!r}")
        if self.shared is not None:
            raise ValueError("shared experts already added")
        dev = self.selector.device
        self.shared = BottleneckExperts(num_shared, self.d_model, rank or self.rank, activation or self.activation).to(dev)
        self.gate_net = GateNetwork(num_shared + 1, self.d_model, hidden, init_bias).to(dev)
        self.gate_mode = gate
        self.gate_combine = combine

    def _gate(self, paths: torch.Tensor) -> torch.Tensor:
        """paths (N, ..., M+1, d) -> gate weights broadcastable to paths[..., :1]."""
        assert self.gate_net is not None
        if self.gate_mode == "token":
            return self.gate_net(paths)
        key = id(self)
        routing = self._routing
        seq_dims = tuple(range(1, paths.dim() - 2))
        if routing is not None and paths.dim() >= 4 and paths.shape[1] == 1 and key in routing.pooled_gates:
            g = routing.pooled_gates[key]
            g = g.repeat_interleave(paths.shape[0] // g.shape[0], 0) if g.shape[0] != paths.shape[0] else g
        else:
            g = self.gate_net(self._pool(paths, seq_dims) if seq_dims else paths)
            if routing is not None:
                routing.pooled_gates[key] = g
        return g.reshape(g.shape[0], *([1] * len(seq_dims)), g.shape[-1])

    def _pool(self, paths: torch.Tensor, seq_dims: tuple[int, ...]) -> torch.Tensor:
        """Mean of paths (N, L, M+1, d) over the real tokens of each sample (the model call's attention
        mask, when this layer reads it and it fits), else over all positions -> (N, M+1, d)."""
        routing = self._routing
        mask = None
        if routing is not None and self.reads_attention_mask and len(seq_dims) == 1:
            mask = routing.mask_for(paths.shape[0], paths.shape[1])
        if mask is None:
            return paths.mean(dim=seq_dims)
        w = mask.to(device=paths.device, dtype=paths.dtype)
        return (paths * w[:, :, None, None]).sum(1) / w.sum(1).clamp_min(1.0)[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._routing is None:
            raise RuntimeError(
                "MTA layer called outside `alter_cli.mta.task_context(model, task_ids)`: no task ids"
            )
        task_ids = self._routing.ids_for(x.shape[0]).to(x.device)
        in_dtype = x.dtype
        if x.dtype != self.selector.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.selector.dtype)  # e.g. a bf16 backbone with fp32 MTA weights, no autocast
        return self._mix(x, task_ids).to(in_dtype)

    def _mix(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        o0 = self.task_mixture(x, task_ids)
        if self.shared is None:
            return o0
        shared_out = self.shared.expert_outputs(x)  # o_j = S_j(x), (N, ..., M, d)
        paths = torch.cat([o0.unsqueeze(-2), shared_out.to(o0.dtype)], dim=-2)
        g = self._gate(paths)
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
