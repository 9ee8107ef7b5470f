"""`alter check`: validate a config and every input it names (data files, stage-1 / eval checkpoint
records) the way the training and eval commands do, without loading a model. For CI and cron jobs,
and the entry point of the property-based tests (tests/alter/test_fuzz_inputs.py).

The config kind is the command it is for: `train-stage1` / `train-baseline` (AlterConfig),
`train-stage2` (Stage2Config: has a `stage1` key) or `eval` (EvalConfig: `checkpoint`, `compare`
or `zero_shot`); `auto` picks it from the top-level keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("auto", "train-stage1", "train-baseline", "train-stage2", "eval")


def config_kind(text: str, kind: str = "auto") -> str:
    """The command a config is for (see the module docstring). Raises ConfigError for an unknown kind."""
    from .config import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"--for must be one of {', '.join(KINDS[1:])}, got {kind!r}")
    if kind != "auto":
        return kind
    keys = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)[ \t]*:", text, flags=re.MULTILINE))  # top-level keys
    if "stage1" in keys:
        return "train-stage2"
    if keys & {"checkpoint", "compare", "zero_shot"}:
        return "eval"
    return "train-stage1"


def check_inputs(kind: str, cfg: Any, read_text: Callable[[Path, str], str]) -> str:
    """Parse every data file of `cfg` (a resolved config of command `kind`) against its task registry
    (from `tasks:`, or the stage-1 / first eval checkpoint's record); returns a one-line summary.
    Raises ConfigError, DataError, UnknownTaskError, CheckpointError (one-line messages)."""
    from .checkpoint import read_checkpoint_meta
    from .config import ConfigError
    from .data import TaskRegistry, parse_jsonl

    if kind == "train-stage2":
        registry = TaskRegistry.from_dict(read_checkpoint_meta(cfg.stage1)["registry"])
    elif kind == "eval":
        sources = ([cfg.checkpoint] if cfg.checkpoint else []) + [c for c in cfg.compare if c != "zero-shot"]
        metas = [read_checkpoint_meta(s) for s in sources]
        if cfg.tasks:
            registry = TaskRegistry.from_config(cfg.tasks)
        elif metas:
            registry = TaskRegistry.from_dict(metas[0]["registry"])
        else:
            raise ConfigError("nothing to evaluate: give checkpoint, compare or tasks (zero-shot)")
    else:
        registry = TaskRegistry.from_config(cfg.tasks)
    counts = []
    for key in ("train", "eval"):
        path = getattr(cfg.data, key)
        if kind == "eval" and key == "train":
            continue
        if path is None:
            if key == "train" or kind == "eval":
                raise ConfigError(f"config: data.{key}: required for {kind}")
            continue
        examples = parse_jsonl(read_text(Path(path), f"data.{key}"), path, registry, cfg.data.fields)
        counts.append(f"{len(examples)} {key} examples")
    return f"{kind} config OK: {len(registry)} tasks ({', '.join(registry.names)}); " + ", ".join(counts)
