"""A tiny synthetic multi-task generator (JSON Lines in the common `input`/`target`/`type` format).

Tasks over short lowercase strings, chosen so that tasks conflict on the same inputs (copy vs
reverse), which a per-task expert resolves:
- `copy` (generate): target = input string
- `reverse` (generate): target = input string reversed
- `parity` (classify, labels even/odd): parity of the number of letters `a`
- `match` (nli, labels yes/no): whether the two strings of the pair `x | y` are equal
"""

from __future__ import annotations

import json
import random

ALPHABET = "abcde"
TASKS = {
    "copy": {"kind": "generate", "labels": None},
    "reverse": {"kind": "generate", "labels": None},
    "parity": {"kind": "classify", "labels": ["even", "odd"]},
    "match": {"kind": "nli", "labels": ["yes", "no"]},
}


def task_configs(names: list[str] | None = None) -> list[dict]:
    """Config entries (name, kind, labels) for the chosen synthetic tasks (default: all four)."""
    names = names or list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown synthetic task {unknown[0]!r} (one of {', '.join(TASKS)})")
    return [{"name": n, **TASKS[n]} for n in names]


def _word(rng: random.Random, lo: int = 3, hi: int = 6) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))


def make_examples(n_per_task: int, seed: int = 0, names: list[str] | None = None) -> list[dict[str, str]]:
    """`n_per_task` examples of each chosen task, interleaved, as dicts with input/target/type."""
    rng = random.Random(seed)
    names = [t["name"] for t in task_configs(names)]
    rows = []
    for _ in range(n_per_task):
        for name in names:
            w = _word(rng)
            if name == "copy":
                rows.append({"input": w, "target": w, "type": name})
            elif name == "reverse":
                rows.append({"input": w, "target": w[::-1], "type": name})
            elif name == "parity":
                rows.append({"input": w, "target": "odd" if w.count("a") % 2 else "even", "type": name})
            else:
                same = rng.random() < 0.5
                other = w if same else _word(rng)
                rows.append({"input": f"{w} | {other}", "target": "yes" if w == other else "no", "type": name})
    return rows


def make_jsonl(n_per_task: int, seed: int = 0, names: list[str] | None = None) -> str:
    """The examples of `make_examples` as JSON Lines text."""
    return "".join(json.dumps(r) + "\n" for r in make_examples(n_per_task, seed, names))
