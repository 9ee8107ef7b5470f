"""MTA module: batched experts vs a per-expert reference, selector, routing, stage-2 gate."""

import pytest
import torch

from alter_cli.mta import (
    ACTIVATIONS,
    BottleneckExperts,
    FFNCopyExperts,
    FFNWeights,
    LoRAExperts,
    MTALayer,
    RoutingState,
    task_context,
)


def _ref_bottleneck(ex: BottleneckExperts, x, w):
    """Slow reference: loop over experts."""
    out = 0
    for k in range(ex.num_experts):
        h = ACTIVATIONS[ex.activation](x @ ex.down[k] + ex.down_bias[k])
        out = out + w[:, k, None, None] * (h @ ex.up[k] + ex.up_bias[k])
    return out


def _ffn(d=8, f=16, gated=True, bias=False):
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    return FFNWeights(w_in=r(f, d), w_out=r(d, f), act=torch.nn.functional.silu, w_gate=r(f, d) if gated else None,
                      b_in=r(f) if bias else None, b_out=r(d) if bias else None)


def _ffn_apply(ffn: FFNWeights, x):
    h = x @ ffn.w_in.t() + (ffn.b_in if ffn.b_in is not None else 0)
    h = ffn.act(x @ ffn.w_gate.t()) * h if ffn.gated else ffn.act(h)
    return h @ ffn.w_out.t() + (ffn.b_out if ffn.b_out is not None else 0)


def test_bottleneck_batched_equals_per_expert_loop():
    torch.manual_seed(0)
    ex = BottleneckExperts(5, 8, 4, "gelu")
    torch.nn.init.normal_(ex.up)
    torch.nn.init.normal_(ex.up_bias)
    x = torch.randn(3, 7, 8)
    w = torch.softmax(torch.randn(3, 5), -1)
    torch.testing.assert_close(ex(x, w), _ref_bottleneck(ex, x, w), rtol=1e-5, atol=1e-5)
    per = ex.expert_outputs(x)
    torch.testing.assert_close((per * w[:, None, :, None]).sum(-2), _ref_bottleneck(ex, x, w), rtol=1e-5, atol=1e-5)


def test_bottleneck_zero_init_gives_exact_zero():
    ex = BottleneckExperts(5, 8, 4)
    out = ex(torch.randn(2, 3, 8), torch.softmax(torch.randn(2, 5), -1))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True)])
def test_ffn_copy_mixture_equals_ffn(gated, bias):
    ffn = _ffn(gated=gated, bias=bias)
    ex = FFNCopyExperts(3, ffn)
    x = torch.randn(2, 5, 8)
    w = torch.softmax(torch.randn(2, 3), -1)
    torch.testing.assert_close(ex(x, w), _ffn_apply(ffn, x), rtol=1e-5, atol=1e-5)


def test_lora_zero_b_equals_ffn_and_expert_k_uses_its_delta():
    ffn = _ffn(gated=True)
    ex = LoRAExperts(3, ffn, 2, lambda: ffn)
    x = torch.randn(2, 4, 8)
    w = torch.softmax(torch.randn(2, 3), -1)
    torch.testing.assert_close(ex(x, w), _ffn_apply(ffn, x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for n in ("in", "gate", "out"):
            getattr(ex, f"lora_B_{n}").normal_()
    onehot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    k = 1
    adapted = FFNWeights(
        w_in=ffn.w_in + ex.lora_B_in[k] @ ex.lora_A_in[k], w_gate=ffn.w_gate + ex.lora_B_gate[k] @ ex.lora_A_gate[k],
        w_out=ffn.w_out + ex.lora_B_out[k] @ ex.lora_A_out[k], act=ffn.act)
    torch.testing.assert_close(ex(x, onehot), _ffn_apply(adapted, x), rtol=1e-4, atol=1e-4)


def _layer(T=3, E=4, **kw):
    return MTALayer(8, T, E, [[t % E] for t in range(T)], rank=4, **kw)


def test_selector_init_own_expert_head_start():
    layer = MTALayer(8, 2, 3, [[0], [1, 2]], rank=4)
    torch.testing.assert_close(layer.selector.detach(), torch.tensor([[0.22, 0.20, 0.20], [0.20, 0.22, 0.22]]))
    a = layer.alpha().detach()
    e = torch.exp(torch.tensor(0.2))  # exp((0.22-0.20)/0.1)
    assert float(a[0, 0]) == pytest.approx(float(e / (e + 2)), rel=1e-6)
    torch.testing.assert_close(a.sum(-1), torch.ones(2))


def test_missing_context_is_a_clear_error():
    layer = _layer()
    with pytest.raises(RuntimeError, match="task_context"):
        layer(torch.randn(2, 3, 8))


def test_per_sample_routing_and_beam_expansion():
    torch.manual_seed(0)
    layer = _layer()
    torch.nn.init.normal_(layer.experts.up)
    x = torch.randn(2, 3, 8)
    ids = torch.tensor([2, 0])
    with task_context(layer, ids):
        y = layer(x)
        y_beam = layer(x.repeat_interleave(3, 0))
    ref = torch.stack([layer.experts(x[i : i + 1], layer.alpha()[ids[i : i + 1]])[0] for i in range(2)])
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(y_beam, y.repeat_interleave(3, 0))
    with pytest.raises(RuntimeError, match="does not match"):
        RoutingState(ids).ids_for(5)


def test_absent_task_rows_get_exact_zero_gradient():
    torch.manual_seed(0)
    layer = _layer(T=3)
    torch.nn.init.normal_(layer.experts.up)
    with task_context(layer, torch.tensor([0, 0])):
        layer(torch.randn(2, 3, 8)).pow(2).sum().backward()
    g = layer.selector.grad
    assert g is not None and torch.count_nonzero(g[1:]) == 0 and torch.count_nonzero(g[0]) > 0


@pytest.mark.parametrize("gate", ["token", "pooled"])
def test_stage2_gate_weights_sum_to_one_and_start_on_task_path(gate):
    torch.manual_seed(0)
    layer = _layer()
    torch.nn.init.normal_(layer.experts.up)
    layer.add_shared_experts(2, gate=gate, hidden=16, init_bias=2.0)
    x = torch.randn(2, 5, 8)
    ids = torch.tensor([1, 2])
    with task_context(layer, ids):
        o0 = layer.task_mixture(x, ids)
        y = layer(x)
    g = layer.last_gate
    assert g.shape == ((2, 5, 3) if gate == "token" else (2, 1, 3))
    torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:-1]))
    e2 = torch.exp(torch.tensor(2.0))
    torch.testing.assert_close(g[..., 0], torch.full(g.shape[:-1], float(e2 / (e2 + 2))))
    # shared experts start at zero: y = g0 * o0
    torch.testing.assert_close(y, g[..., :1] * o0)
    # after training-like perturbation the gate varies but still sums to one
    with torch.no_grad():
        layer.gate_net.w2.weight.normal_()
    with task_context(layer, ids):
        layer(x)
    torch.testing.assert_close(layer.last_gate.sum(-1), torch.ones(layer.last_gate.shape[:-1]))
    stats = layer.gate_stats()
    assert sum(stats[f"gate_{j}"] for j in range(3)) == pytest.approx(1.0, abs=1e-6)
    assert 0 < stats["gate_entropy"] <= float(torch.log(torch.tensor(3.0))) + 1e-6


def test_pooled_gate_reused_for_single_token_decoding():
    torch.manual_seed(0)
    layer = _layer()
    layer.add_shared_experts(1, gate="pooled", hidden=16)
    with torch.no_grad():
        layer.gate_net.w2.weight.normal_()
    with task_context(layer, torch.tensor([0, 1])):
        layer(torch.randn(2, 6, 8))
        prefill = layer.last_gate.clone()
        layer(torch.randn(2, 1, 8))
        torch.testing.assert_close(layer.last_gate, prefill)
