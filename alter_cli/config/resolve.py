"""YAML + `--set key=value` overrides -> a validated config (`resolve_config`), and back (`dump_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..readers import ReadError, dump_yaml, load_yaml
from .base import ConfigError
from .train import AlterConfig


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
