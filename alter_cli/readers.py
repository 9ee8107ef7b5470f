"""Readers of user text: YAML 1.2 (core schema), JSON and JSON Lines, safe against hostile input.

- YAML is read with the YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), not
  PyYAML's YAML 1.1 default: `no`/`yes`/`on`/`off` are strings (`train.mixed_precision: no` is "no"),
  `1:30` is the string "1:30" (no base-60 numbers), `010` is ten, `2024-01-01` is a string, `1e12` a
  float. Only the core tags (null, bool, int, float, str, seq, map) are accepted; anchors/aliases are
  refused (they can blow a small file up into an exponentially large tree); nesting is limited to
  `MAX_DEPTH` levels and integers to `MAX_INT_DIGITS` digits.
- JSON: the same depth and integer-size limits (Python's own reader would fail with RecursionError or
  a ValueError on such input).
- JSON Lines: split on "\\n" only (a trailing "\\r" is dropped), never `str.splitlines()`, which also
  breaks at U+2028, U+2029, U+0085, form feeds ... that are valid data inside JSON strings.

Errors: `ReadError` (a ValueError) with a one-line message; callers add the file name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

MAX_DEPTH = 64
MAX_INT_DIGITS = 4300  # Python's default limit on int <-> str conversion (sys.get_int_max_str_digits)


class ReadError(ValueError):
    """Text that cannot be read as YAML/JSON (one-line message, without the file name)."""


# ------------------------------------------------------------------------------------------- YAML 1.2
_CORE_RESOLVERS = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", [*"~nN", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     list("-+0123456789.")),
)


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader restricted to the YAML 1.2 core schema, with depth and alias limits."""

    yaml_implicit_resolvers: dict = {}
    yaml_constructors: dict = {}

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported in configs", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


for _tag, _regexp, _first in _CORE_RESOLVERS:
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(_regexp), _first)


def _construct_null(loader: Yaml12Loader, node: yaml.Node) -> None:
    loader.construct_scalar(node)
    return None


def _construct_bool(loader: Yaml12Loader, node: yaml.Node) -> bool:
    value = loader.construct_scalar(node)
    if value not in ("true", "True", "TRUE", "false", "False", "FALSE"):
        raise yaml.constructor.ConstructorError(None, None, f"{value!r} is not a YAML 1.2 boolean", node.start_mark)
    return value.lower() == "true"


def _construct_int(loader: Yaml12Loader, node: yaml.Node) -> int:
    value = str(loader.construct_scalar(node))
    digits = value.lstrip("+-")
    if len(digits) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"integer with {len(digits)} digits (more than {MAX_INT_DIGITS})", node.start_mark)
    try:
        if digits.startswith("0o"):
            return int(digits[2:], 8)
        if digits.startswith("0x"):
            return int(digits[2:], 16)
        number = int(digits, 10)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"{value!r} is not an integer", node.start_mark) from None
    return -number if value.startswith("-") else number


def _construct_float(loader: Yaml12Loader, node: yaml.Node) -> float:
    value = str(loader.construct_scalar(node))
    special = value.lower().lstrip("+-")
    if special in (".inf", ".nan"):
        number = float(special[1:])
        return -number if value.startswith("-") else number
    if len(value) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(None, None, f"number with {len(value)} characters", node.start_mark)
    try:
        return float(value)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"{value!r} is not a number", node.start_mark) from None


def _construct_str(loader: Yaml12Loader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))


def _construct_undefined(loader: Yaml12Loader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"tag {node.tag!r} is not allowed (YAML 1.2 core schema only)", node.start_mark)


Yaml12Loader.add_constructor("tag:yaml.org,2002:null", _construct_null)
Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
Yaml12Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
Yaml12Loader.add_constructor("tag:yaml.org,2002:seq", yaml.SafeLoader.construct_yaml_seq)
Yaml12Loader.add_constructor("tag:yaml.org,2002:map", yaml.SafeLoader.construct_yaml_map)
Yaml12Loader.add_constructor(None, _construct_undefined)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with the 1.2 core schema. Raises ReadError `line N: problem`."""
    try:
        return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ReadError(f"{where}malformed YAML ({getattr(exc, 'problem', None) or exc.__class__.__name__})") from None
    except RecursionError:  # unreachable with MAX_DEPTH, kept as a last guard
        raise ReadError(f"malformed YAML (nested more than {MAX_DEPTH} levels deep)") from None


class _Yaml12Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes strings a YAML 1.2 core reader would take for numbers/booleans
    ("1e3", "0o7": plain in YAML 1.1), so what `dump_yaml` writes reads back the same with both."""


_NON_STR = [re.compile(r) for tag, r, _ in _CORE_RESOLVERS]


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if any(r.match(value) for r in _NON_STR):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return yaml.SafeDumper.represent_str(dumper, value)


_Yaml12Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """YAML text (sorted keys) that `load_yaml` and PyYAML's 1.1 reader both read back as `data`."""
    return yaml.dump(data, Dumper=_Yaml12Dumper, sort_keys=True)


# ------------------------------------------------------------------------------------------------ JSON
def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ReadError(f"integer with {len(text.lstrip('-'))} digits (more than {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(name: str) -> float:
    raise ReadError(f"{name} is not JSON")


def load_json(text: str) -> Any:
    """json.loads as strict JSON (no NaN/Infinity), integers of at most MAX_INT_DIGITS digits, depth
    limited by Python's recursion limit. Raises ReadError (`malformed JSON (...)`)."""
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise ReadError(f"malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ReadError("malformed JSON (nested too deeply)") from None
    except ReadError as exc:
        raise ReadError(f"malformed JSON ({exc})") from None


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a JSON Lines text, split on "\\n" only (a trailing "\\r" dropped), so
    U+2028/U+2029/U+0085 inside JSON strings stay data. Blank lines are skipped."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield lineno, line
