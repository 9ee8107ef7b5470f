"""Validated configuration models of `alter` (pydantic, unknown keys rejected), one module per concept:

- ``base``: `ConfigError` (one line naming the problem), the size limits, the bounded field types;
- ``train``: `AlterConfig` (`alter train-stage1`, `alter train-baseline`) and the sections every
  command shares (model, tasks, data, MTA, training loop, generation, LoRA baseline);
- ``stage2``: `Stage2Config` (`alter train-stage2`) and `EvalConfig` (`alter eval`);
- ``resolve``: YAML and `--set` overrides -> a validated config (`resolve_config`).

Precedence: defaults < YAML file < `--set key=value` overrides (dotted keys, YAML scalars) < flags.
Errors a user can cause raise `ConfigError` (a ValueError) with one line naming the problem.
"""

from .base import (
    MAX_BATCH,
    MAX_EXPERTS,
    MAX_LENGTH,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_TOKENS_PER_BATCH,
    MAX_WIDTH,
    Batch,
    ConfigError,
    Experts,
    Layer,
    Length,
    Logit,
    Samples,
    Width,
    at_most,
    magnitude_at_most,
    show_number,
)
from .resolve import deep_merge, dump_config, format_validation_error, parse_set, relative_to, resolve_config
from .stage2 import EvalConfig, Stage2Config, Stage2MTAConfig
from .train import (
    AlterConfig,
    DataConfig,
    FieldsConfig,
    GateFields,
    GenerateConfig,
    LoRABaselineConfig,
    ModelConfig,
    MTAConfig,
    TaskConfig,
    TrainConfig,
    check_tokens_per_batch,
)

__all__ = [
    "MAX_BATCH", "MAX_EXPERTS", "MAX_LENGTH", "MAX_SAMPLES", "MAX_SEED", "MAX_TOKENS_PER_BATCH", "MAX_WIDTH",
    "AlterConfig", "Batch", "ConfigError", "DataConfig", "EvalConfig", "Experts", "FieldsConfig", "GateFields",
    "GenerateConfig", "Layer", "Length", "LoRABaselineConfig", "Logit", "MTAConfig", "ModelConfig", "Samples",
    "Stage2Config", "Stage2MTAConfig", "TaskConfig", "TrainConfig", "Width", "at_most", "check_tokens_per_batch",
    "deep_merge", "dump_config", "format_validation_error", "magnitude_at_most", "parse_set", "relative_to",
    "resolve_config", "show_number",
]
