"""The building blocks of `alter`'s configs: `ConfigError`, the size limits with their reasons, the
bounded field types and `_Strict`, the base of every section (unknown keys and `true` for a number
refused)."""

from __future__ import annotations

import math
import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator


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
