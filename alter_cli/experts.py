"""MTA expert kinds: E experts of one MTA layer as stacked tensors, mixed with per-sample weights.

Every kind maps x (N, ..., d) and mixture weights w (N, E) (a task's selector row α_t per sample) to
Σ_k w_k · Expert_k(x) with no Python loop over experts (stacked weights, batched products):

- `BottleneckExperts` (Houlsby et al. 2019; Pfeiffer et al. 2021): up_k(act(down_k(x))), beside the FFN.
- `FFNCopyExperts`: full copies of the block's pretrained FFN (the ALTER reference code's experts).
- `LoRAExperts`: expert k is the FFN with W + s·B_k A_k on each of its projections (Hu et al. 2021,
  arXiv:2106.09685); the mixture is over the E adapted FFNs' outputs.
- `HydraLoRAExperts`: asymmetric LoRA (Tian et al., NeurIPS 2024, arXiv:2404.19245): per projection
  one down-projection A shared by the experts and one up-projection B_k per expert, mixed inside the
  projection: W x + s·(Σ_k w_k B_k) A x. One A product for all experts; a task's mixture is itself a
  rank-r LoRA (B_t = Σ_k α_{t,k} B_k), so its cost per token is that of a single LoRA of rank r.

LoRA kinds read the base FFN weights through `get_ffn` (never copied or trained); their B start at
zero, so every kind starts at its base: 0 for bottleneck, FFN(x) for ffn_copy, lora and hydra_lora.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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

EXPERT_KINDS = ("bottleneck", "ffn_copy", "lora", "hydra_lora")
REPLACES_FFN = ("lora", "hydra_lora")  # kinds whose mixture already contains the (adapted) FFN


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


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))


def _projection_names(ffn: FFNWeights) -> list[str]:
    return ["in", "out"] + (["gate"] if ffn.gated else [])


def _projection_dims(ffn: FFNWeights) -> dict[str, tuple[int, int]]:
    f, d = ffn.w_in.shape
    return {"in": (d, f), "gate": (d, f), "out": (f, d)}


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
    """E low-rank deltas on the FFN's projections: expert k is the FFN with W + s·B_k A_k on each of
    its projections (A (E, r, in) random, B (E, out, r) zero, s = lora_alpha / r, default 1).
    Returns Σ_k weights_k FFN_k(x), which equals FFN(x) at initialisation. The base FFN weights are
    read, not copied or trained.

    Cost: the base in/gate projections run once; the E intermediate activations (N, ..., E, f) are
    formed from them plus the experts' deltas; the base down-projection runs once, on Σ_k w_k h_k
    (exact: Σ_k w_k h_k W_outᵀ = (Σ_k w_k h_k) W_outᵀ).
    """

    def __init__(self, num_experts: int, ffn: FFNWeights, rank: int, get_ffn: Callable[[], FFNWeights],
                 lora_alpha: float | None = None):
        super().__init__()
        self.num_experts, self.rank, self._get_ffn = num_experts, rank, get_ffn
        self.scaling = 1.0 if lora_alpha is None else float(lora_alpha) / rank
        dims = _projection_dims(ffn)
        for n in _projection_names(ffn):
            i, o = dims[n]
            a = torch.empty(num_experts, rank, i)
            nn.init.uniform_(a, -1.0 / math.sqrt(i), 1.0 / math.sqrt(i))
            self.register_parameter(f"lora_A_{n}", nn.Parameter(a))
            self.register_parameter(f"lora_B_{n}", nn.Parameter(torch.zeros(num_experts, o, rank)))

    def _delta(self, x: torch.Tensor, name: str, per_expert: bool) -> torch.Tensor:
        """s·B_k A_k x for every expert k -> (..., E, out); x (..., in) or (..., E, in)."""
        A, B = getattr(self, f"lora_A_{name}"), getattr(self, f"lora_B_{name}")
        if per_expert:
            z = torch.einsum("...ei,eri->...er", x, A.to(x.dtype))
        else:  # one matmul over the flattened (E·r) axis
            z = (x @ A.flatten(0, 1).t().to(x.dtype)).unflatten(-1, (self.num_experts, self.rank))
        return self.scaling * torch.einsum("...er,eor->...eo", z, B.to(x.dtype))

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's change of the FFN output, FFN_k(x) − FFN(x), shape (N, ..., E, d): exactly 0
        at initialisation (B = 0). The form of a stage-2 shared expert (`MTALayer.add_shared_experts`
        with kind `lora`): a LoRA on the block's FFN, added to the layer output."""
        ffn = self._get_ffn()
        h_in = _linear(x, ffn.w_in, ffn.b_in)
        h = h_in.unsqueeze(-2) + self._delta(x, "in", per_expert=False)  # (..., E, f)
        if ffn.gated:
            g = _linear(x, ffn.w_gate, ffn.b_gate)
            h, h0 = ffn.act(g.unsqueeze(-2) + self._delta(x, "gate", per_expert=False)) * h, ffn.act(g) * h_in
        else:
            h, h0 = ffn.act(h), ffn.act(h_in)
        # FFN_k(x) − FFN(x) = (h_k − h₀) W_outᵀ + s·B_k A_k h_k (the bias cancels)
        return _linear(h - h0.unsqueeze(-2), ffn.w_out, None) + self._delta(h, "out", per_expert=True)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ffn = self._get_ffn()
        h = _linear(x, ffn.w_in, ffn.b_in).unsqueeze(-2) + self._delta(x, "in", per_expert=False)
        if ffn.gated:
            g = _linear(x, ffn.w_gate, ffn.b_gate).unsqueeze(-2) + self._delta(x, "gate", per_expert=False)
            h = ffn.act(g) * h
        else:
            h = ffn.act(h)
        w = _expand_alpha(weights, x).to(h.dtype)
        hw = h * w[..., None]  # (..., E, f)
        y = _linear(hw.sum(-2), ffn.w_out, None) + self._delta(hw, "out", per_expert=True).sum(-2)
        return y if ffn.b_out is None else y + w.sum(-1, keepdim=True) * ffn.b_out.to(y.dtype)


class HydraLoRAExperts(nn.Module):
    """Asymmetric LoRA experts (HydraLoRA, Tian et al. NeurIPS 2024, arXiv:2404.19245).

    On each FFN projection W (out, in): one shared A (r, in), random (PEFT's Kaiming-uniform bound
    1/√in), and E up-projections B (E, out, r), zero. With per-sample weights w (N, E):
        proj(x) = x Wᵀ + b + s · (x Aᵀ) (Σ_k w_k B_k)ᵀ,   s = lora_alpha / r (default 1)
    and the layer returns the FFN built from these projections (gated or plain). At initialisation
    it is exactly FFN(x). Cost: one A product for all experts, then one (N, out, r) mixed B per
    sample applied by a batched matmul: the cost of a single rank-r LoRA, whatever E.
    """

    def __init__(self, num_experts: int, ffn: FFNWeights, rank: int, get_ffn: Callable[[], FFNWeights],
                 lora_alpha: float | None = None):
        super().__init__()
        self.num_experts, self.rank, self._get_ffn = num_experts, rank, get_ffn
        self.scaling = 1.0 if lora_alpha is None else float(lora_alpha) / rank
        dims = _projection_dims(ffn)
        for n in _projection_names(ffn):
            i, o = dims[n]
            a = torch.empty(rank, i)
            nn.init.uniform_(a, -1.0 / math.sqrt(i), 1.0 / math.sqrt(i))
            self.register_parameter(f"lora_A_{n}", nn.Parameter(a))
            self.register_parameter(f"lora_B_{n}", nn.Parameter(torch.zeros(num_experts, o, rank)))

    def mixed_b(self, name: str, weights: torch.Tensor) -> torch.Tensor:
        """Σ_k w_k B_k for projection `name` and weights (N, E) -> (N, out, r)."""
        B = getattr(self, f"lora_B_{name}")
        return (weights.to(B.dtype) @ B.flatten(1)).unflatten(1, B.shape[1:])

    def _proj(self, x3: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, name: str,
              weights: torch.Tensor) -> torch.Tensor:
        """x3 (N, L, in) -> (N, L, out)."""
        A = getattr(self, f"lora_A_{name}")
        z = x3 @ A.t().to(x3.dtype)  # (N, L, r): one product for all experts
        bmix = self.mixed_b(name, weights).to(x3.dtype)  # (N, out, r)
        return torch.baddbmm(_linear(x3, w, b), z, bmix.transpose(1, 2), alpha=self.scaling)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ffn = self._get_ffn()
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])
        h = self._proj(x3, ffn.w_in, ffn.b_in, "in", weights)
        if ffn.gated:
            h = ffn.act(self._proj(x3, ffn.w_gate, ffn.b_gate, "gate", weights)) * h
        else:
            h = ffn.act(h)
        y = self._proj(h, ffn.w_out, ffn.b_out, "out", weights)
        return y if y.dim() == x.dim() else y.reshape(*x.shape[:-1], y.shape[-1])  # (N, L, d): y itself, not a view


def build_experts(kind: str, num_experts: int, d_model: int, rank: int, activation: str = "relu",
                  ffn: FFNWeights | None = None, get_ffn: Callable[[], FFNWeights] | None = None,
                  lora_alpha: float | None = None) -> nn.Module:
    """The expert module of one MTA layer. Raises ValueError for an unknown kind or a kind that
    needs the block's FFN (ffn_copy, lora, hydra_lora) without it."""
    if kind == "bottleneck":
        return BottleneckExperts(num_experts, d_model, rank, activation)
    if kind not in EXPERT_KINDS:
        raise ValueError(f"unknown expert kind {kind!r} ({', '.join(EXPERT_KINDS)})")
    if ffn is None or (kind != "ffn_copy" and get_ffn is None):
        raise ValueError(f"{kind} experts need the block's FFN weights")
    if kind == "ffn_copy":
        return FFNCopyExperts(num_experts, ffn)
    cls = LoRAExperts if kind == "lora" else HydraLoRAExperts
    return cls(num_experts, ffn, rank, get_ffn, lora_alpha)
