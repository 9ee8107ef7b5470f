"""Expert kinds (HydraLoRA, the faster LoRA mixture), the task-aware stage-2 gate, selector learning rate."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from alter_cli.config import MTAConfig, Stage2MTAConfig
from alter_cli.data import TaskRegistry, TaskSpec
from alter_cli.experts import FFNWeights, HydraLoRAExperts, LoRAExperts
from alter_cli.inject import attach_mta, optimizer_param_groups, set_trainable
from alter_cli.mta import GateNetwork, MTALayer, alpha_per_task, task_context
from alter_cli.train import build_stage1, run_training

from .conftest import make_model
from .test_mta import _ffn, _ffn_apply
from .test_train import LOGITS_SCRIPT, ROOT, _cfg, _examples, _fixed_batch

REG = TaskRegistry([TaskSpec("a", "generate"), TaskSpec("b", "classify", ("x", "y")), TaskSpec("c", "generate")])


def _randomise_b(ex):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in ex.named_parameters():
            if name.startswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _lin(x, w, b=None):
    return x @ w.t() + (0 if b is None else b)


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True)])
def test_hydra_lora_starts_at_ffn_and_equals_per_expert_loop(gated, bias):
    ffn = _ffn(gated=gated, bias=bias)
    ex = HydraLoRAExperts(4, ffn, 3, lambda: ffn, lora_alpha=6.0)
    x = torch.randn(2, 5, 8)
    w = torch.softmax(torch.randn(2, 4), -1)
    torch.testing.assert_close(ex(x, w), _ffn_apply(ffn, x), rtol=1e-5, atol=1e-6)  # B = 0: the base FFN
    _randomise_b(ex)
    s = 6.0 / 3

    def proj(inp, wb, b, name):  # reference: a loop over experts and samples
        A, B = getattr(ex, f"lora_A_{name}"), getattr(ex, f"lora_B_{name}")
        rows = []
        for n in range(inp.shape[0]):
            delta = sum(w[n, k] * (inp[n] @ A.t() @ B[k].t()) for k in range(ex.num_experts))
            rows.append(_lin(inp[n], wb, b) + s * delta)
        return torch.stack(rows)

    h = proj(x, ffn.w_in, ffn.b_in, "in")
    h = ffn.act(proj(x, ffn.w_gate, None, "gate")) * h if gated else ffn.act(h)
    ref = proj(h, ffn.w_out, ffn.b_out, "out")
    torch.testing.assert_close(ex(x, w), ref, rtol=1e-4, atol=1e-5)
    # one-hot weights = the FFN with W + s·B_k A on every projection: a task mixture is one rank-r LoRA
    k = 2
    onehot = torch.nn.functional.one_hot(torch.tensor([k, k]), 4).float()
    adapted = FFNWeights(
        w_in=ffn.w_in + s * ex.lora_B_in[k] @ ex.lora_A_in, w_out=ffn.w_out + s * ex.lora_B_out[k] @ ex.lora_A_out,
        w_gate=ffn.w_gate + s * ex.lora_B_gate[k] @ ex.lora_A_gate if gated else None, act=ffn.act,
        b_in=ffn.b_in, b_out=ffn.b_out)
    torch.testing.assert_close(ex(x, onehot), _ffn_apply(adapted, x), rtol=1e-4, atol=1e-5)
    # 2-D input (tokens without a sequence axis) gives the same rows
    torch.testing.assert_close(ex(x[:, 0], w), ref[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True)])
def test_lora_mixture_equals_per_expert_loop(gated, bias):
    """The mixture Σ_k w_k FFN_k(x) with the base down-projection computed once on Σ_k w_k h_k is
    exact, also for weights that do not sum to one."""
    ffn = _ffn(gated=gated, bias=bias)
    ex = LoRAExperts(3, ffn, 2, lambda: ffn, lora_alpha=4.0)
    _randomise_b(ex)
    x = torch.randn(2, 4, 8)
    w = torch.rand(2, 3)
    ref = 0
    for k in range(3):
        adapted = FFNWeights(
            w_in=ffn.w_in + 2 * ex.lora_B_in[k] @ ex.lora_A_in[k], w_out=ffn.w_out + 2 * ex.lora_B_out[k] @ ex.lora_A_out[k],
            w_gate=ffn.w_gate + 2 * ex.lora_B_gate[k] @ ex.lora_A_gate[k] if gated else None, act=ffn.act,
            b_in=ffn.b_in, b_out=ffn.b_out)
        ref = ref + w[:, k, None, None] * _ffn_apply(adapted, x)
    torch.testing.assert_close(ex(x, w), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gated,bias", [(True, False), (False, True)])
def test_lora_expert_outputs_are_each_experts_change_of_the_ffn(gated, bias):
    """The per-expert outputs used by LoRA-form shared experts: FFN_k(x) − FFN(x) with W + s·B_k A_k
    on every projection (a per-expert loop over the adapted FFNs), exactly 0 while B = 0."""
    ffn = _ffn(gated=gated, bias=bias)
    ex = LoRAExperts(3, ffn, 2, lambda: ffn, lora_alpha=4.0)
    x = torch.randn(2, 4, 8)
    assert torch.equal(ex.expert_outputs(x), torch.zeros(2, 4, 3, 8))
    _randomise_b(ex)
    out = ex.expert_outputs(x)
    assert out.shape == (2, 4, 3, 8)
    for k in range(3):
        adapted = FFNWeights(
            w_in=ffn.w_in + 2 * ex.lora_B_in[k] @ ex.lora_A_in[k], w_out=ffn.w_out + 2 * ex.lora_B_out[k] @ ex.lora_A_out[k],
            w_gate=ffn.w_gate + 2 * ex.lora_B_gate[k] @ ex.lora_A_gate[k] if gated else None, act=ffn.act,
            b_in=ffn.b_in, b_out=ffn.b_out)
        torch.testing.assert_close(out[..., k, :], _ffn_apply(adapted, x) - _ffn_apply(ffn, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stage1_kind", ["bottleneck", "hydra_lora"])
@pytest.mark.parametrize("gate_input", ["paths", "hidden"])
def test_lora_shared_experts_start_exactly_at_stage1_and_add_their_ffn_change(stage1_kind, gate_input):
    ffn = _ffn(gated=True)
    torch.manual_seed(0)
    layer = MTALayer(8, 2, 2, [[0], [1]], expert=stage1_kind, rank=4, ffn=ffn, get_ffn=lambda: ffn, lora_alpha=8.0)
    x = torch.randn(2, 5, 8)
    ids = torch.tensor([1, 0])
    with torch.no_grad(), task_context(layer, ids):
        stage1 = layer(x)
    layer.add_shared_experts(2, rank=3, init_bias=0.0, combine="residual", task="bias", inputs=gate_input, kind="lora")
    assert isinstance(layer.shared, LoRAExperts) and layer.shared.rank == 3
    assert layer.shared.scaling == pytest.approx(2.0)  # the task experts' scale 8 / 4, whatever the rank
    with torch.no_grad(), task_context(layer, ids):
        assert torch.equal(layer(x), stage1)  # B = 0: stage 2 starts exactly at stage 1
    _randomise_b(layer.shared)
    with torch.no_grad(), task_context(layer, ids):
        y = layer(x)
        g = layer.last_gate
    per = layer.shared.expert_outputs(x)
    torch.testing.assert_close(y, stage1 + (g[..., 1:, None] * per).sum(-2), rtol=1e-5, atol=1e-6)  # y = o₀ + Σ g_j o_j
    with pytest.raises(ValueError, match="shared experts already added"):
        layer.add_shared_experts(1, kind="lora")
    bare = MTALayer(8, 2, 2, [[0], [1]], rank=4)  # built without the block's FFN
    with pytest.raises(ValueError, match="lora shared experts need the block's FFN weights"):
        bare.add_shared_experts(1, kind="lora")
    with pytest.raises(ValueError, match="shared expert kind must be 'bottleneck' or 'lora', got 'ffn_copy'"):
        bare.add_shared_experts(1, kind="ffn_copy")


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("expert", ["hydra_lora", "lora"])
def test_lora_kinds_give_base_logits_at_init(arch, expert):
    model = make_model(arch)
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(5, 40, (3, 6), generator=g)}
    if arch == "t5":
        batch["decoder_input_ids"] = torch.randint(5, 40, (3, 4), generator=g)
    with torch.no_grad():
        base = model(**batch).logits
    layers = attach_mta(model, MTAConfig(expert=expert, num_experts=3, rank=2, lora_alpha=4.0), REG)
    assert all(layer.replaces_ffn for layer in layers)
    with torch.no_grad(), task_context(model, torch.tensor([0, 1, 2])):
        out = model(**batch).logits
    torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-6)


def test_hydra_lora_parameter_count_is_shared_a_plus_e_b():
    model = make_model("llama")  # d 32, f 64, 2 blocks, gated
    attach_mta(model, MTAConfig(expert="hydra_lora", num_experts=5, rank=3), REG)
    per_layer = 3 * (32 + 32 + 64) + 5 * 3 * (64 + 64 + 32) + 3 * 5  # A per projection, E B's, selector
    assert set_trainable(model, 1) == 2 * per_layer


@pytest.mark.parametrize("expert", ["hydra_lora", "lora"])
def test_lora_kinds_reload_identically_in_fresh_process(expert, tiny_llama_dir, synthetic_jsonl, tmp_path):
    cfg = _cfg(tiny_llama_dir, synthetic_jsonl, mta={"expert": expert, "rank": 4, "lora_alpha": 8.0}, max_steps=4,
               learning_rate=1e-2)
    captured = {}

    def setup(c):
        captured["b"] = build_stage1(c)
        return captured["b"]

    out = tmp_path / "ckpt"
    run_training(cfg, 1, train_examples=_examples(cfg), out_dir=out, setup_model=setup)
    bundle = captured["b"]
    model = bundle.model.eval()
    assert any(torch.count_nonzero(p) for n, p in model.named_parameters() if "lora_B" in n)  # it trained
    batch = _fixed_batch(bundle.tokenizer, bundle.registry, bundle.is_seq2seq)
    torch.save(dict(batch), tmp_path / "batch.pt")
    ids = batch.pop("task_ids")
    with torch.no_grad(), task_context(model, ids):
        ref = model(**batch).logits
    script = LOGITS_SCRIPT.format(root=str(ROOT), ckpt=str(out), batch=str(tmp_path / "batch.pt"),
                                  out=str(tmp_path / "logits.pt"))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    assert torch.equal(torch.load(tmp_path / "logits.pt"), ref)


# -- stage 2: the task-aware gate -----------------------------------------------------------------

def _stage1_layer(T=2, E=2, d=8):
    torch.manual_seed(0)
    layer = MTALayer(d, T, E, [[t % E] for t in range(T)], rank=4)
    torch.nn.init.normal_(layer.experts.up, std=0.3)
    return layer


@pytest.mark.parametrize("task,inputs", [("none", "paths"), ("bias", "paths"), ("embedding", "paths"),
                                         ("task_only", "paths"), ("none", "hidden"), ("bias", "hidden"),
                                         ("embedding", "hidden")])
@pytest.mark.parametrize("gate", ["token", "pooled"])
def test_task_aware_gate_starts_exactly_at_stage1(task, inputs, gate):
    layer = _stage1_layer(T=3, E=3)
    x = torch.randn(3, 5, 8)
    ids = torch.tensor([0, 2, 1])
    with torch.no_grad(), task_context(layer, ids):
        stage1 = layer(x)
    layer.add_shared_experts(2, gate=gate, hidden=16, init_bias=0.5, combine="residual", task=task,
                             inputs=inputs)
    with torch.no_grad(), task_context(layer, ids):
        stage2 = layer(x)
    assert torch.equal(stage2, stage1)
    g = layer.last_gate
    torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:-1]))
    e = torch.exp(torch.tensor(0.5))
    torch.testing.assert_close(g[..., 0], torch.full(g.shape[:-1], float(e / (e + 2))))  # same for every task


def test_capped_gate_starts_exactly_at_stage1_with_the_capped_bias():
    layer = _stage1_layer(T=3, E=3)
    x, ids = torch.randn(3, 5, 8), torch.tensor([0, 2, 1])
    with torch.no_grad(), task_context(layer, ids):
        stage1 = layer(x)
    layer.add_shared_experts(2, hidden=16, init_bias=0.5, combine="residual", task="bias", logit_cap=0.3)
    with torch.no_grad(), task_context(layer, ids):
        assert torch.equal(layer(x), stage1)
    e = math.exp(0.3 * math.tanh(0.5 / 0.3))  # g₀ = softmax(c·tanh(b/c), 0, 0)₀
    torch.testing.assert_close(layer.last_gate[..., 0], torch.full((3, 5), e / (e + 2)))


def _saturated_gate(cap: float | None):
    """A 3-path bias gate whose token logits are huge (|z| ~ 1e3): the uncapped softmax is one-hot."""
    torch.manual_seed(1)
    gate = GateNetwork(3, 8, 16, 0.0, num_tasks=2, task="bias", logit_cap=cap)
    torch.nn.init.normal_(gate.w2.weight, std=1e3)
    paths = torch.randn(4, 6, 3, 8)
    g = gate(paths, torch.tensor([0, 1, 0, 1]))
    g[..., 1].sum().backward()  # any loss of the gate weights
    return g.detach(), gate.task_bias.grad.abs().max().item()


def test_gate_logit_cap_bounds_the_gate_and_keeps_the_task_bias_gradient():
    g, grad = _saturated_gate(None)
    assert g.min() < 1e-6 and grad < 1e-6  # hardened: the per-task bias learns nothing
    c = 1.0
    g, grad = _saturated_gate(c)
    # token logits in (−c, c), zero task bias: g_j ≥ e^{−c} / (e^{−c} + 2 e^{c}) = 1 / (1 + 2 e^{2c})
    assert g.min() >= 1 / (1 + 2 * math.exp(2 * c)) and g.max() <= 1 / (1 + 2 * math.exp(-2 * c))
    assert grad > 1e-2
    torch.testing.assert_close(g.sum(-1), torch.ones(4, 6))


def test_gate_logit_cap_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="task_only"):
        GateNetwork(3, 8, 16, 0.0, num_tasks=2, task="task_only", logit_cap=1.0)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive finite"):
            GateNetwork(3, 8, 16, 0.0, num_tasks=2, task="bias", logit_cap=bad)
    with pytest.raises(ValueError, match="task_only has none"):
        Stage2MTAConfig(gate_task="task_only", gate_logit_cap=2.0)
    assert Stage2MTAConfig(gate_logit_cap=2.0).gate_logit_cap == 2.0


def _train_two_task_toy(task: str, steps: int = 250, logit_cap: float | None = None, inputs: str = "paths"):
    """Two tasks read the same inputs and need opposite outputs (+c for task 0, −c for task 1); the
    stage-1 experts output 0 for both, so only the task can tell the gate which shared expert to use."""
    torch.manual_seed(0)
    d = 8
    layer = MTALayer(d, 2, 2, [[0], [1]], rank=4)  # zero-initialised experts: o₀ = 0 for both tasks
    layer.add_shared_experts(2, hidden=16, init_bias=0.0, combine="residual", task=task, logit_cap=logit_cap,
                             inputs=inputs)
    layer.experts.requires_grad_(False)
    layer.selector.requires_grad_(False)
    opt = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=3e-2)
    c = torch.linspace(-1, 1, d)
    x = torch.randn(16, 3, d)
    xs, ids = torch.cat([x, x]), torch.tensor([0] * 16 + [1] * 16)
    target = torch.cat([c.expand(16, 3, d), -c.expand(16, 3, d)])
    for _ in range(steps):
        with task_context(layer, ids):
            loss = (layer(xs) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad(), task_context(layer, ids):
        final = float((layer(xs) - target).pow(2).mean())
    g = layer.last_gate.reshape(32, -1, 3).mean(1)
    return final, g[:16].mean(0), g[16:].mean(0), float(c.pow(2).mean())


@pytest.mark.parametrize("task,cap,inputs", [("bias", None, "paths"), ("embedding", None, "paths"),
                                             ("task_only", None, "paths"), ("bias", 1.0, "paths"),
                                             ("bias", None, "hidden"), ("embedding", None, "hidden")])
def test_task_aware_gate_learns_different_gates_for_opposite_tasks(task, cap, inputs):
    loss, g0, g1, chance = _train_two_task_toy(task, logit_cap=cap, inputs=inputs)
    assert loss < 0.1 * chance  # both tasks fitted (a task-blind layer cannot go below `chance`)
    assert float((g0 - g1).abs().max()) > 0.3, (g0, g1)


@pytest.mark.parametrize("inputs", ["paths", "hidden"])
def test_task_blind_gate_cannot_separate_the_toy_tasks(inputs):
    loss, g0, g1, chance = _train_two_task_toy("none", inputs=inputs)
    torch.testing.assert_close(g0, g1)  # identical inputs and o₀: identical gates
    assert loss > 0.9 * chance  # the best task-blind answer is the mean of +c and −c, i.e. 0


@pytest.mark.parametrize("gate", ["token", "pooled"])
def test_hidden_gate_reads_the_layer_input_not_the_paths(gate):
    """gate_input "hidden": W₁ reads x ∈ R^d (d·h + h weights instead of (M+1)·d·h + h), and the gate
    is a function of x alone: changing the shared experts changes the paths but not g."""
    layer = _stage1_layer(T=2, E=2)
    layer.add_shared_experts(2, gate=gate, hidden=16, init_bias=0.0, combine="residual", task="bias",
                             inputs="hidden")
    assert layer.gate_net.inputs == "hidden" and tuple(layer.gate_net.w1.weight.shape) == (16, 8)
    torch.manual_seed(3)
    torch.nn.init.normal_(layer.gate_net.w2.weight, std=1.0)
    x, ids = torch.randn(2, 5, 8), torch.tensor([0, 1])
    with torch.no_grad(), task_context(layer, ids):
        layer(x)
        g = layer.last_gate.clone()
        torch.nn.init.normal_(layer.shared.up, std=1.0)
        torch.nn.init.normal_(layer.shared.down, std=1.0)
        layer(x)
        assert torch.equal(layer.last_gate, g)
        if gate == "token":  # the same gate as GateNetwork on x directly
            w1, w2, b = layer.gate_net.w1, layer.gate_net.w2, layer.gate_net.task_bias
            ref = torch.softmax(w2(F.relu(w1(x))) + b[ids][:, None, :], dim=-1)
            torch.testing.assert_close(g, ref)
    paths_layer = _stage1_layer(T=2, E=2)
    paths_layer.add_shared_experts(2, hidden=16, task="bias")
    assert tuple(paths_layer.gate_net.w1.weight.shape) == (16, 3 * 8)


def test_hidden_gate_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="task_only"):
        GateNetwork(3, 8, 16, 0.0, num_tasks=2, task="task_only", inputs="hidden")
    with pytest.raises(ValueError, match="gate inputs must be one of"):
        GateNetwork(3, 8, 16, 0.0, inputs="x")
    with pytest.raises(ValueError, match="task_only has none"):
        Stage2MTAConfig(gate_task="task_only", gate_input="hidden")
    with pytest.raises(ValueError):
        Stage2MTAConfig(gate_input="tokens")
    layer = _stage1_layer()
    layer.add_shared_experts(1, task="bias", inputs="hidden")
    with pytest.raises(ValueError, match="needs the layer input"):
        layer.gate_net(torch.randn(2, 2, 8), torch.tensor([0, 1]))


def test_task_aware_gate_requires_task_ids():
    layer = _stage1_layer()
    layer.add_shared_experts(1, task="bias")
    with pytest.raises(ValueError, match="needs the task ids"):
        layer.gate_net(torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match="gate task mode"):
        _stage1_layer().add_shared_experts(1, task="tasks")


# -- selector learning rate and α per task -----------------------------------------------------------

def test_optimizer_groups_give_selector_and_gate_their_own_learning_rate():
    model = make_model("llama")
    attach_mta(model, MTAConfig(num_experts=3, rank=2), REG)
    set_trainable(model, 1)
    cfg = MTAConfig(num_experts=3, rank=2, selector_learning_rate=0.05)
    groups = {g["name"]: g for g in optimizer_param_groups(model, 1e-3, cfg)}
    assert groups["selector"]["lr"] == 0.05 and groups["other"]["lr"] == 1e-3 and "gate" not in groups
    assert len(groups["selector"]["params"]) == 2  # one selector per MTA layer (2 blocks)
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    default = optimizer_param_groups(model, 1e-3, MTAConfig())
    assert {g["lr"] for g in default} == {1e-3}


def test_train_log_records_alpha_per_task_and_selector_lr_moves_it_faster(tiny_llama_dir, synthetic_jsonl, tmp_path):
    runs = {}
    for name, sel_lr in (("shared", None), ("fast", 0.1)):
        cfg = _cfg(tiny_llama_dir, synthetic_jsonl, mta={"selector_learning_rate": sel_lr, "rank": 4},
                   max_steps=6, learning_rate=1e-2, warmup_steps=0, log_every=3)
        records = []
        run_training(cfg, 1, train_examples=_examples(cfg), out_dir=tmp_path / name, on_step=records.append)
        runs[name] = [r for r in records if r.get("log")]
    reg = TaskRegistry.from_config(cfg.tasks)
    fresh = make_model("llama")
    attach_mta(fresh, cfg.mta, reg)
    init = alpha_per_task(fresh, reg.names)  # the selector's initial α rows
    assert alpha_per_task(make_model("llama"), reg.names) == {}  # no MTA layers
    for rs in runs.values():
        assert [r["step"] for r in rs] == [3, 6]
        for r in rs:
            assert set(r["alpha_per_task"]) == set(reg.names)
            assert all(sum(v) == pytest.approx(1.0, abs=1e-5) for v in r["alpha_per_task"].values())

    def moved(rs):
        last = rs[-1]["alpha_per_task"]
        return max(abs(a - b) for t in reg.names for a, b in zip(last[t], init[t], strict=True))

    assert moved(runs["shared"]) > 0
    assert moved(runs["fast"]) > 2 * moved(runs["shared"])
