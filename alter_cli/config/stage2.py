"""The config of `alter train-stage2` (`Stage2Config`) and of `alter eval` (`EvalConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Experts, _Strict
from .train import (
    DataConfig,
    GateFields,
    GenerateConfig,
    ModelConfig,
    TaskConfig,
    TrainConfig,
    check_tokens_per_batch,
    check_unique_tasks,
)


class Stage2MTAConfig(GateFields):
    """The `mta` section of stage 2 (spec section 1): M shared experts and the gate network, added to
    every MTA layer of the stage-1 checkpoint (the task experts, selector and layer placement come
    from it). The gate fields are `GateFields`'; here num_shared_experts defaults to 2 and gate_task
    to `bias`.

    gate_regularizer: `none` (default), `load_balancing` (w·(M+1)·Σ_j ḡ_j², ḡ = mean gate weight over
    the batch's tokens, minimal for equal use; Fedus et al. 2021, arXiv:2101.03961 eq. 4 for dense
    weights) or `entropy` (−w·mean per-token entropy of g, against collapse onto one path).
    """

    num_shared_experts: Experts = Field(2, ge=1)
    gate_task: Literal["none", "bias", "embedding", "task_only"] = "bias"
    gate_regularizer: Literal["none", "load_balancing", "entropy"] = "none"
    gate_regularizer_weight: float = Field(0.01, ge=0, le=1e6)


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
            check_unique_tasks(self.tasks)
        return self
