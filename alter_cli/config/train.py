"""The config of `alter train-stage1` / `alter train-baseline` (`AlterConfig`) and its sections,
which stage 2 and `alter eval` reuse."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import (
    MAX_BATCH,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_TOKENS_PER_BATCH,
    Batch,
    Experts,
    Layer,
    Length,
    Logit,
    Samples,
    Width,
    _Strict,
    at_most,
    show_number,
)


class ModelConfig(_Strict):
    """The base model: `default` (embedded SmolLM2-135M-Instruct GGUF), a local directory, a hub id
    already in the local Hugging Face cache, or a `.gguf` file path."""

    name: str = "default"
    gguf_file: str | None = None


class TaskConfig(_Strict):
    """One task of the registry. `kind`: classify (closed label set), nli (closed label set over a
    pair) or generate (free text)."""

    name: str = Field(min_length=1)
    kind: Literal["classify", "nli", "generate"]
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _labels_match_kind(self) -> TaskConfig:
        if self.kind in ("classify", "nli") and not self.labels:
            raise ValueError(f"task {self.name!r} of kind {self.kind} needs a non-empty labels list")
        if self.kind == "generate" and self.labels:
            raise ValueError(f"task {self.name!r} of kind generate takes no labels")
        return self


class FieldsConfig(_Strict):
    """Names of the JSONL fields (pCLUE schema by default)."""

    input: str = "input"
    target: str = "target"
    type: str = "type"


class DataConfig(_Strict):
    """Multi-task JSON Lines data and prompting.

    sampling_temperature T: task t is drawn with probability ∝ n_t^(1/T) (n_t = task size);
    T = 1 samples proportionally to size, large T approaches uniform (task-balanced).
    """

    train: str | None = None
    eval: str | None = None
    fields: FieldsConfig = FieldsConfig()
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    max_length: Length = Field(512, ge=8)
    max_target_length: Length = Field(128, ge=1)
    sampling_temperature: float = Field(2.0, gt=0)


class GateFields(_Strict):
    """The stage-2 fields of an MTA config (spec section 1): M shared experts and the gate network
    mixing the task path o₀ with them. Stage 2 sets them (`Stage2MTAConfig`); a stage-1 config has
    none (num_shared_experts 0); `alter_cli.stage2.STAGE2_MTA_FIELDS` lists them.

    shared_expert: the shared experts' form — `bottleneck` (default: d→r→d adapters beside the FFN)
    or `lora` (each a LoRA on the block's FFN projections adding FFN_j(x) − FFN(x), the task
    experts' scale s; `alter_cli.experts.LoRAExperts.expert_outputs`); shared_rank: their rank r
    (null: mta.rank). Both start at exactly 0 output.
    gate: `token` (a gate per token, default) or `pooled` (one gate per sample).
    gate_init_bias: initial gate logit of the task path o₀ (the others start at 0, W₂ at zero), so
    g₀ = e^b / (e^b + M) at start; a large value (≥ 20 in float32) starts exactly on the task path
    (the stage-1 model) but leaves the shared experts almost no gradient.
    gate_combine: `convex` (spec: y = g₀·o₀ + Σ_j g_j·o_j) or `residual` (y = o₀ + Σ_j g_j·o_j: the
    stage-1 task mixture keeps weight 1, so stage 2 starts exactly at stage 1 for any
    gate_init_bias; `MTALayer.add_shared_experts`).
    gate_task: how the gate sees the sample's task — `none` (the spec's gate over [o₀; …; o_M] only),
    `bias` (+ a learned per-task logit bias), `embedding` (a learned task embedding joined to the
    gate input, MOELoRA arXiv:2310.18339) or `task_only` (g = softmax(b_t) from the task alone,
    token-independent); `alter_cli.mta.GateNetwork`. Every mode starts equal for every task.
    gate_logit_cap: soft cap c > 0 of the gate's token logits, c·tanh(z/c), with the task bias added
    after it (null: no cap; `GateNetwork`). Keeps the token gate from hardening onto one path, so the
    gate and its per-task bias keep a gradient. gate_input: the gate's W₁ reads `paths` (default,
    spec: [o₀; …; o_M]) or `hidden` (x: (M+1)× fewer weights). Neither cap nor hidden with task_only.
    gate_learning_rate: learning rate of the gate network (null: train.learning_rate).
    """

    num_shared_experts: Experts = Field(0, ge=0)
    shared_expert: Literal["bottleneck", "lora"] = "bottleneck"
    shared_rank: Width | None = Field(None, ge=1)
    gate: Literal["token", "pooled"] = "token"
    gate_hidden: Width = Field(64, ge=1)
    gate_init_bias: Logit = 2.0
    gate_combine: Literal["convex", "residual"] = "convex"
    gate_task: Literal["none", "bias", "embedding", "task_only"] = "none"
    gate_logit_cap: float | None = Field(None, gt=0, le=1e3)
    gate_input: Literal["paths", "hidden"] = "paths"
    gate_learning_rate: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _token_options_need_token_logits(self) -> GateFields:
        if self.gate_logit_cap is not None and self.gate_task == "task_only":
            raise ValueError("mta.gate_logit_cap caps the gate's token logits; mta.gate_task: task_only has none")
        if self.gate_input == "hidden" and self.gate_task == "task_only":
            raise ValueError("mta.gate_input: hidden feeds the gate's token part; mta.gate_task: task_only has none")
        return self


class MTAConfig(GateFields):
    """The Mixture-of-Task-Adapters module (spec section 1).

    layers: block indices of a decoder-only model (negative counts from the end; default last 4);
    encoder_layers / decoder_layers: the same for encoder-decoder (T5) models (default: last block).
    task_to_experts: task name -> its own expert indices (default: task i owns expert i mod E).
    expert: `bottleneck` (beside the FFN), `ffn_copy`, `lora` (E LoRA-adapted copies of the FFN,
    mixed at the output) or `hydra_lora` (asymmetric LoRA, HydraLoRA arXiv:2404.19245: one A shared by
    the experts of a projection, one B per expert, mixed inside the projection); `alter_cli.experts`.
    lora_alpha: LoRA scale s = lora_alpha / rank of the `lora` / `hydra_lora` experts (null: s = 1).
    selector_learning_rate: learning rate of the stage-1 selector logits (null: train.learning_rate).
    The stage-2 fields (`GateFields`: none by default) are set by stage 2 from its `mta` section.
    """

    expert: Literal["bottleneck", "ffn_copy", "lora", "hydra_lora"] = "bottleneck"
    num_experts: Experts = Field(5, ge=1)
    rank: Width = Field(64, ge=1)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    placement: Literal["parallel", "replace"] = "parallel"
    layers: list[Layer] | None = None
    encoder_layers: list[Layer] | None = None
    decoder_layers: list[Layer] | None = None
    temperature: Annotated[float, Field(ge=1e-6, le=1e6)] = 0.1
    own_init: Logit = 0.22
    other_init: Logit = 0.20
    task_to_experts: dict[str, list[int]] | None = None
    lora_alpha: float | None = Field(None, gt=0, le=1e6)
    selector_learning_rate: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _experts_in_range(self) -> MTAConfig:
        for task, experts in (self.task_to_experts or {}).items():
            if not experts:
                raise ValueError(f"mta.task_to_experts[{task!r}] is empty")
            bad = [e for e in experts if not 0 <= e < self.num_experts]
            if bad:
                raise ValueError(
                    f"mta.task_to_experts[{task!r}] has expert index {bad[0]} outside 0..{self.num_experts - 1}"
                )
        return self


class TrainConfig(_Strict):
    """The accelerate training loop (shared by both stages).

    gradient_checkpointing: recompute each block's activations in the backward pass instead of
    keeping them (non-reentrant torch checkpointing; less activation memory for about one more
    forward per step; same losses and gradients, see docs/alter-export.md).
    distributed: how several launched processes share the work — `auto` (FSDP when the launcher
    turns it on, `accelerate launch --use_fsdp --fsdp_version 2` or an FSDP config file, else DDP),
    `ddp`, or `fsdp` (FSDP2 under any multi-process launch). Under FSDP every MTA layer is a wrap unit
    of its own and checkpoints are the same full files as under DDP (`alter_cli.distributed`).
    tune_selector / tune_task_experts: stage 2 also trains stage 1's selector / task experts (both
    frozen by default, spec section 1; `alter_cli.inject.set_trainable`). Stage 1 trains both anyway.
    """

    max_steps: Samples = Field(100, ge=1)
    batch_size: Batch = Field(8, ge=1)
    gradient_accumulation_steps: Samples = Field(1, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_steps: Samples = Field(10, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = Field(42, ge=0, le=MAX_SEED)
    log_every: Samples = Field(10, ge=1)
    save_every: Samples = Field(0, ge=0)
    unfreeze_backbone: bool = False
    tune_selector: bool = False
    tune_task_experts: bool = False
    gradient_checkpointing: bool = False
    """Non-reentrant activation checkpointing of every transformer block (default off)."""
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"

    @model_validator(mode="after")
    def _samples_bounded(self) -> TrainConfig:
        n = self.max_steps * self.gradient_accumulation_steps * self.batch_size
        if n > MAX_SAMPLES:
            raise ValueError(f"train.max_steps × gradient_accumulation_steps × batch_size = {show_number(n)} samples is more "
                             f"than {MAX_SAMPLES} (the task-balanced sampler holds an index per sample)")
        return self


class GenerateConfig(_Strict):
    """Generation for evaluation (`alter eval`, `alter predict`, the evaluation after training).

    label_match: how a generated text is matched to a classify/nli label set after normalisation
    (case, whitespace, punctuation): `exact`; `prefix` (the text may run on after the label); or
    `search` (also a label named anywhere in the text as whole words, when it names exactly one:
    "The topic of this article is sports." -> sports). See `metrics.match_label`.
    """

    batch_size: Batch = Field(16, ge=1)
    max_new_tokens: Length = Field(32, ge=1)
    num_beams: Annotated[int, at_most(64, "each beam is another row of the batch")] = Field(1, ge=1)
    label_match: Literal["exact", "prefix", "search"] = "prefix"

    @model_validator(mode="after")
    def _rows_bounded(self) -> GenerateConfig:
        if self.batch_size * self.num_beams > MAX_BATCH:
            raise ValueError(f"generation.batch_size × num_beams = {self.batch_size * self.num_beams} rows is more "
                             f"than {MAX_BATCH} (a batch of more rows does not fit in memory)")
        return self


class LoRABaselineConfig(_Strict):
    """The multi-task PEFT LoRA baseline of `alter train-baseline` (ignored by the MTA stages).

    LoRA (Hu et al. 2021, arXiv:2106.09685): W x + (alpha/rank)·B A x on every linear projection of
    the FFN of the blocks that `mta` places its layers in. rank: null = matched to the number of
    trainable parameters of MTA stage 1 with the `mta` section (round(n_MTA / Σ(d_in + d_out)));
    alpha: null = 2·rank.
    """

    rank: Width | None = Field(None, ge=1)
    alpha: float | None = Field(None, gt=0, le=1e6)
    dropout: float = Field(0.0, ge=0, lt=1)


def check_tokens_per_batch(data: DataConfig, train: TrainConfig) -> None:
    """train.batch_size × data.max_length bounded by MAX_TOKENS_PER_BATCH (ValueError naming the limit)."""
    n = train.batch_size * data.max_length
    if n > MAX_TOKENS_PER_BATCH:
        raise ValueError(f"train.batch_size × data.max_length = {n} tokens per micro-batch is more than "
                         f"{MAX_TOKENS_PER_BATCH} (their activations exceed any accelerator's memory)")


def check_unique_tasks(tasks: list[TaskConfig]) -> list[str]:
    """The task names, in order; ValueError naming the first name declared twice."""
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"task name {dup[0]!r} declared twice")
    return names


class AlterConfig(_Strict):
    """The config of `alter train-stage1` and `alter train-baseline` (and the base of stage 2)."""

    model: ModelConfig = ModelConfig()
    tasks: list[TaskConfig] = Field(min_length=1)
    data: DataConfig = DataConfig()
    mta: MTAConfig = MTAConfig()
    lora: LoRABaselineConfig = LoRABaselineConfig()
    train: TrainConfig = TrainConfig()
    generation: GenerateConfig = GenerateConfig()

    @model_validator(mode="after")
    def _unique_tasks(self) -> AlterConfig:
        check_tokens_per_batch(self.data, self.train)
        names = check_unique_tasks(self.tasks)
        unknown = sorted(set(self.mta.task_to_experts or {}) - set(names))
        if unknown:
            raise ValueError(f"mta.task_to_experts names unknown task {unknown[0]!r}")
        return self
