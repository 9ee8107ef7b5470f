"""Validated configuration models of `alter` (pydantic, unknown keys rejected).

Precedence: defaults < YAML file < `--set key=value` overrides (dotted keys, YAML scalars) < flags.
Errors a user can cause raise `ConfigError` (a ValueError) with one line naming the problem.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .readers import ReadError, dump_yaml, load_yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used (one-line message)."""


def _numeric_without_bool(annotation: Any) -> bool:
    """True when `annotation` holds int or float (possibly inside lists, dicts, unions) but not bool:
    the fields where pydantic's lax mode would silently read `true` as 1."""
    if annotation in (int, float):
        return True
    if annotation is bool or annotation is Any or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return False
    if typing.get_origin(annotation) is Literal:
        return False
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return bool(args) and any(_numeric_without_bool(a) for a in args) and not any(a is bool for a in args)


def _first_bool(value: Any) -> bool | None:
    """The first bool inside a value (itself, list items, dict values), or None."""
    if isinstance(value, bool):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        if (found := _first_bool(item)) is not None:
            return found
    return None


def show_number(value: Any) -> str:
    """A number for a one-line message: 6 significant digits; a huge int by its digit count."""
    if isinstance(value, int) and abs(value) >= 10**15:
        digits = len(str(abs(value)))
        return f"{'-' if value < 0 else ''}{str(abs(value))[:3]}… ({digits} digits)"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def at_most(limit: float, reason: str) -> AfterValidator:
    """An upper bound with the reason it exists, for `Annotated[int, at_most(...)]` fields."""

    def check(value: Any) -> Any:
        if value is not None and value > limit:
            raise ValueError(f"{show_number(value)} is more than {show_number(limit)} ({reason})")
        return value

    return AfterValidator(check)


def magnitude_at_most(limit: float, reason: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if value is not None and abs(value) > limit:
            raise ValueError(f"{show_number(value)} is outside -{limit:g}..{limit:g} ({reason})")
        return value

    return AfterValidator(check)


# Size limits (issue 15 item 12): each bounds the memory or time a value implies; the message names it.
MAX_SAMPLES = 2**26        # the task-balanced sampler holds an int64 index per sample (0.5 GB; ~1.5 GB while built)
MAX_BATCH = 65536          # samples in one micro-batch / generation batch (rows of activations)
MAX_TOKENS_PER_BATCH = 2**21  # batch_size × max_length: activations beyond any accelerator's memory
MAX_LENGTH = 2**20         # tokens of one sequence (prompt + target, or new tokens)
MAX_WIDTH = 2**16          # an adapter's rank / hidden width: rank × hidden parameters per projection
MAX_EXPERTS = 256          # experts per MTA layer (each a full adapter) and shared experts
MAX_SEED = 2**32 - 1       # accelerate's set_seed seeds numpy, which takes 0 .. 2**32 - 1

Samples = Annotated[int, at_most(MAX_SAMPLES, f"at most {MAX_SAMPLES} samples: the sampler holds an index per sample")]
Batch = Annotated[int, at_most(MAX_BATCH, "a batch of more samples does not fit in memory")]
Length = Annotated[int, at_most(MAX_LENGTH, "tokens per sequence")]
Width = Annotated[int, at_most(MAX_WIDTH, "rank/width × hidden size parameters per projection")]
Experts = Annotated[int, at_most(MAX_EXPERTS, "each expert is a full adapter in every MTA layer")]
Layer = Annotated[int, magnitude_at_most(4096, "a block index")]
Logit = Annotated[float, magnitude_at_most(1000.0, "a logit beyond ±1000 saturates the softmax in float16/32")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic's lax mode reads `true` as 1 for int/float fields (also inside lists and dicts:
        `layers: [true, 2]`); refuse it (a likely typo)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _numeric_without_bool(field.annotation):
            found = _first_bool(value)
            if found is not None:
                raise ValueError(f"expected a number, got {str(found).lower()}")
            if (isinstance(value, float) and math.isfinite(value) and abs(value) >= 2**53
                    and (field.annotation is int or int in typing.get_args(field.annotation))):
                return int(value)  # 1e30 for an int field: an (exact) int, so the size limit names itself
        return value


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


class MTAConfig(_Strict):
    """The Mixture-of-Task-Adapters module (spec section 1).

    layers: block indices of a decoder-only model (negative counts from the end; default last 4);
    encoder_layers / decoder_layers: the same for encoder-decoder (T5) models (default: last block).
    task_to_experts: task name -> its own expert indices (default: task i owns expert i mod E).
    expert: `bottleneck` (beside the FFN), `ffn_copy`, `lora` (E LoRA-adapted copies of the FFN,
    mixed at the output) or `hydra_lora` (asymmetric LoRA, HydraLoRA arXiv:2404.19245: one A shared by
    the experts of a projection, one B per expert, mixed inside the projection); `alter_cli.experts`.
    lora_alpha: LoRA scale s = lora_alpha / rank of the `lora` / `hydra_lora` experts (null: s = 1).
    selector_learning_rate: learning rate of the stage-1 selector logits (null: train.learning_rate).
    Stage-2 fields (num_shared_experts, gate, gate_hidden, gate_init_bias, gate_combine, gate_task,
    gate_logit_cap, gate_input, gate_learning_rate) are used by stage 2 only.
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
    num_shared_experts: Experts = Field(0, ge=0)
    gate: Literal["token", "pooled"] = "token"
    gate_hidden: Width = Field(64, ge=1)
    gate_init_bias: Logit = 2.0
    gate_combine: Literal["convex", "residual"] = "convex"
    gate_task: Literal["none", "bias", "embedding", "task_only"] = "none"
    gate_logit_cap: float | None = Field(None, gt=0, le=1e3)
    gate_input: Literal["paths", "hidden"] = "paths"
    gate_learning_rate: float | None = Field(None, gt=0)

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
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task name {dup[0]!r} declared twice")
        unknown = sorted(set(self.mta.task_to_experts or {}) - set(names))
        if unknown:
            raise ValueError(f"mta.task_to_experts names unknown task {unknown[0]!r}")
        return self


class Stage2MTAConfig(_Strict):
    """Stage 2 of MTA (spec section 1): M shared experts and the gate network, added to every MTA layer
    of the stage-1 checkpoint (the task experts, selector and layer placement come from it).

    gate: `token` (a gate per token, default) or `pooled` (one gate per sample).
    gate_init_bias: initial gate logit of the task path o₀ (the others start at 0, W₂ at zero), so
    g₀ = e^b / (e^b + M) at start; a large value (≥ 20 in float32) starts exactly on the task path
    (the stage-1 model) but leaves the shared experts almost no gradient.
    gate_combine: `convex` (spec: y = g₀·o₀ + Σ_j g_j·o_j) or `residual` (y = o₀ + Σ_j g_j·o_j: the
    stage-1 task mixture keeps weight 1, so stage 2 starts exactly at stage 1 for any
    gate_init_bias; `MTALayer.add_shared_experts`).
    gate_regularizer: `none` (default), `load_balancing` (w·(M+1)·Σ_j ḡ_j², ḡ = mean gate weight over
    the batch's tokens, minimal for equal use; Fedus et al. 2021, arXiv:2101.03961 eq. 4 for dense
    weights) or `entropy` (−w·mean per-token entropy of g, against collapse onto one path).
    gate_task: how the gate sees the sample's task — `none` (the spec's gate over [o₀; …; o_M] only),
    `bias` (default: + a learned per-task logit bias), `embedding` (a learned task embedding joined
    to the gate input, MOELoRA arXiv:2310.18339) or `task_only` (g = softmax(b_t) from the task
    alone, token-independent); `alter_cli.mta.GateNetwork`. Every mode starts equal for every task.
    gate_logit_cap: soft cap c > 0 of the gate's token logits, c·tanh(z/c), with the task bias added
    after it (null: no cap; `GateNetwork`). Keeps the token gate from hardening onto one path, so the
    gate and its per-task bias keep a gradient. gate_input: the gate's W₁ reads `paths` (default,
    spec: [o₀; …; o_M]) or `hidden` (x: (M+1)× fewer weights). Neither cap nor hidden with task_only.
    gate_learning_rate: learning rate of the gate network (null: train.learning_rate).
    """

    num_shared_experts: Experts = Field(2, ge=1)
    gate: Literal["token", "pooled"] = "token"
    gate_hidden: Width = Field(64, ge=1)
    gate_init_bias: Logit = 2.0
    gate_combine: Literal["convex", "residual"] = "convex"
    gate_task: Literal["none", "bias", "embedding", "task_only"] = "bias"
    gate_logit_cap: float | None = Field(None, gt=0, le=1e3)
    gate_input: Literal["paths", "hidden"] = "paths"
    gate_learning_rate: float | None = Field(None, gt=0)
    gate_regularizer: Literal["none", "load_balancing", "entropy"] = "none"
    gate_regularizer_weight: float = Field(0.01, ge=0, le=1e6)

    @model_validator(mode="after")
    def _cap_needs_token_logits(self) -> Stage2MTAConfig:
        if self.gate_logit_cap is not None and self.gate_task == "task_only":
            raise ValueError("mta.gate_logit_cap caps the gate's token logits; mta.gate_task: task_only has none")
        if self.gate_input == "hidden" and self.gate_task == "task_only":
            raise ValueError("mta.gate_input: hidden feeds the gate's token part; mta.gate_task: task_only has none")
        return self


class Stage2Config(_Strict):
    """The config of `alter train-stage2`: the stage-1 checkpoint to start from (its base model, task
    registry and MTA layers), data, stage-2 MTA options and the training loop."""

    stage1: str = Field(min_length=1)
    data: DataConfig = DataConfig()
    mta: Stage2MTAConfig = Stage2MTAConfig()
    train: TrainConfig = TrainConfig()
    generation: GenerateConfig = GenerateConfig()

    @model_validator(mode="after")
    def _backbone_frozen(self) -> Stage2Config:
        check_tokens_per_batch(self.data, self.train)
        if self.train.unfreeze_backbone:
            raise ValueError("train.unfreeze_backbone: stage 2 keeps the backbone frozen")
        return self


class EvalConfig(_Strict):
    """The config of `alter eval`: what to score (a checkpoint, more checkpoints to compare, the bare
    base model), on which JSONL set, with which generation settings.

    model / tasks: the base model and task registry of a zero-shot run (default: those of the first
    checkpoint). data.prompt_format / max_length default to the values a checkpoint was trained with.
    """

    checkpoint: str | None = None
    compare: list[str] = []
    zero_shot: bool = False
    model: ModelConfig | None = None
    tasks: list[TaskConfig] | None = None
    data: DataConfig = DataConfig()
    generation: GenerateConfig = GenerateConfig()

    @model_validator(mode="after")
    def _unique_tasks(self) -> EvalConfig:
        if self.tasks is not None:
            names = [t.name for t in self.tasks]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"task name {dup[0]!r} declared twice")
        return self


def parse_set(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> nested dict; values parsed as YAML scalars. Raises ConfigError."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set has an empty key in {item!r}")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except ReadError as exc:
            raise ConfigError(f"--set {key}: value {raw[:80]!r} is not valid YAML ({exc})") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is both a value and a section")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge, `over` wins."""
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def format_validation_error(exc: ValidationError) -> str:
    """The first pydantic error as one line: `config: <dotted.key>: <message>`."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    if err["type"] == "missing":
        msg = "required key missing"
    return f"config: {loc}: {msg}" if loc else f"config: {msg}"


def resolve_config(
    text: str | None, source: str, overrides: list[str] | None = None, model_cls: type[BaseModel] = AlterConfig
) -> BaseModel:
    """Parse YAML `text` (file `source`), apply `--set` overrides and validate.

    Raises ConfigError (one line) on malformed YAML, unknown keys, wrong types or bad values.
    """
    data: Any = {}
    if text is not None:
        try:
            data = load_yaml(text)
        except ReadError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    data = deep_merge(data, parse_set(overrides or []))
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML with sorted keys."""
    return dump_yaml(cfg.model_dump(mode="json"))


def relative_to(path: str | None, base: Path) -> str | None:
    """Resolve a path from a config file relative to the config file's folder."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))

