"""Validated models of the JSON records alter writes into a checkpoint and reads back
(adapter_config.json of the MTA stages, alter_baseline.json of the LoRA baseline): the types of the
fields alter uses are checked on reading, so a hand-edited record gives one line (issue 15 item 12).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import ConfigError, Length, format_validation_error


class _Record(BaseModel):
    """A JSON record alter wrote and reads back (a checkpoint's adapter_config.json / alter_baseline.json):
    the types of the fields alter uses are checked (a hand-edited file gives one line, not a traceback);
    fields it does not use are kept as they are."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class BaseModelRecord(_Record):
    name: str = Field(min_length=1)
    gguf_file: str | None = None
    config_hash: str | None = None


class TaskRecord(_Record):
    name: str = Field(min_length=1)
    kind: Literal["classify", "nli", "generate"]
    labels: list[str] | None = None


class RegistryRecord(_Record):
    tasks: list[TaskRecord] = Field(min_length=1)


class DataRecord(_Record):
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    max_length: Length = Field(512, ge=8)
    max_target_length: Length = Field(128, ge=1)


class CheckpointRecord(_Record):
    """adapter_config.json (MTA stages 1/2) or alter_baseline.json (LoRA baseline, stage 0)."""

    format_version: int
    stage: int = Field(0, ge=0, le=2)
    step: int = Field(0, ge=0)
    base_model: BaseModelRecord
    registry: RegistryRecord
    mta_config: dict[str, Any] | None = None
    has_shared_experts: bool = False
    data: DataRecord | None = None
    backbone_weights: str | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _data_object(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be an object (prompt_format, max_length, max_target_length)")
        return value


def check_checkpoint_record(meta: Any, where: str) -> None:
    """Raise ConfigError `where: key: problem` when a checkpoint's JSON record has a field of the wrong
    type or value (issue 15 item 12: hand-edited checkpoint JSON)."""
    try:
        CheckpointRecord.model_validate(meta)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc).removeprefix('config: ')}") from None
