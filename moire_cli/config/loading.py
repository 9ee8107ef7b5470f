"""Reading a `moire` config: YAML 1.2 core schema (:class:`_ConfigLoader`), ``--set key=value`` overrides
(:func:`parse_overrides`), the ``material:`` key (moire_cli/config/materials.py) and validation with one-line
errors (:func:`config_from_dict`, :func:`load_config`): defaults < material < YAML < ``--set``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from moire_cli.config.common import ConfigError
from moire_cli.config.materials import apply_material
from moire_cli.config.phonons import PhononsConfig

C = TypeVar("C", bound=BaseModel)


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    """'a.b=value' strings -> (dotted key, YAML-scalar value)."""
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set: bad key {key!r}")
        try:
            value = _load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None)
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}" + (f" ({problem})" if problem else "")) from None
        out.append((key, value))
    return out


_UNION_TAGS = {"str", "int", "float", "bool", "PathPoint", "SweepRange", "TemperatureRange"}


def _format_error(err: ValidationError) -> str:
    """One line naming the key: the most specific (deepest) of pydantic's errors; on a tie, not the
    'wrong type' error of another branch of a union (list versus range)."""
    errors = err.errors()
    e = max(errors, key=lambda x: (len(x["loc"]), not x["type"].endswith("_type")))
    loc = ".".join(
        str(x) for x in e["loc"] if not (str(x) in _UNION_TAGS or "[" in str(x) or str(x).startswith("function-"))
    )
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"config: {loc}: {msg}" if loc else f"config: {msg}"  # whole-model checks name their keys


def config_from_dict(data: dict, cls: type[C] = PhononsConfig, overrides: list[str] | None = None) -> C:
    """Validate ``data`` (+ dotted overrides) as ``cls``: defaults < ``material`` < data < overrides.
    Raises ConfigError (one line)."""
    data = dict(data)
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    data = apply_material(data, set(cls.model_fields))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


#: Deepest nesting of a config (sections, lists) and most values after expanding YAML aliases.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 1_000_000


class _ConfigLoader(yaml.SafeLoader):
    """A safe loader for configs that reads the YAML 1.2 core schema instead of PyYAML's YAML 1.1:
    only true/false are booleans (``no``, ``on``, ``yes``, ``off`` stay strings), no sexagesimal
    numbers (``1:30`` is a string), no timestamps, ints decimal / 0o octal / 0x hex (``010`` is 10);
    rejects a key given twice in one mapping (PyYAML keeps the last one silently), nesting deeper than
    :data:`MAX_YAML_DEPTH` and integers too long for Python (over 4300 digits), each with the line."""

    yaml_implicit_resolvers: dict = {}
    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:  # explicit scalar keys only (merge keys '<<' may repeat)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        try:
            body = text.lstrip("+-")
            base = 8 if body.startswith("0o") else 16 if body.startswith("0x") else 10
            return int(text, base)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"integer with {len(text)} characters is too long", node.start_mark) from None


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)
for _tag, _regexp, _first in (  # YAML 1.2 core schema (yaml.org/spec/1.2.2, §10.3.2)
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
    ("merge", r"^(?:<<)$", "<"),
):
    _ConfigLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_regexp), list(_first))


def _count_values(obj, limit: int = MAX_YAML_VALUES) -> int:
    """Number of values in ``obj`` counting shared (aliased) objects each time, stopping at ``limit``."""
    count, stack = 0, [obj]
    while stack and count <= limit:
        cur = stack.pop()
        count += 1
        if isinstance(cur, dict):
            stack.extend(cur.keys())
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return count


def _load_yaml(text: str):
    """Parse ``text`` with :class:`_ConfigLoader`. Raises yaml.YAMLError (with a mark where known)."""
    data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    if _count_values(data) > MAX_YAML_VALUES:
        raise yaml.YAMLError(f"more than {MAX_YAML_VALUES:g} values after expanding aliases")
    return data


def load_config(path: Path | str, cls: type[C] = PhononsConfig, overrides: list[str] | None = None) -> C:
    """Read YAML ``path`` and resolve defaults < YAML < overrides as ``cls``.

    Raises:
        ConfigError: missing/unreadable file, malformed YAML, not a mapping, validation failure.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or (str(err) if mark is None else None)
        raise ConfigError(f"malformed YAML in {path}{where}" + (f": {problem}" if problem else "")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping of sections")
    return config_from_dict(data, cls, overrides)
