"""Property-based test (hypothesis) of alter's input validation (issue 15): mutations of the shipped
configs (wrong types, huge / negative / NaN numbers, unknown keys, odd YAML), of their data files and
of checkpoint records, run through `alter check` in-process (the CLI's own path from an error to one
line + exit 2). Property: exit 0 or 2, never a traceback; exit 2 is exactly one `alter: error:` line.

ALTER_FUZZ_EXAMPLES=N runs N examples instead of 1,000; ALTER_FUZZ_REPORT=FILE appends the counts
(inputs, exit 0, exit 2, other, tracebacks) to FILE.
"""

from __future__ import annotations

import collections
import copy
import functools
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from alter_cli.cli import app  # noqa: E402
from alter_cli.readers import load_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["stage1.yaml", "stage1-t5.yaml", "stage2.yaml", "eval.yaml", "bbc-stage1.yaml", "bbc-stage2.yaml",
           "bbc-compare-train.yaml", "bbc-compare-stage2.yaml", "bbc-eval.yaml", "bbc-compare-eval.yaml",
           "bbc-demo.yaml", "bbc-demo-stage2.yaml"]
N_EXAMPLES = int(os.environ.get("ALTER_FUZZ_EXAMPLES", "1000"))
runner = CliRunner()

HOSTILE = [0, -1, 1, 7, 2**31, 2**63, 10**40, 10**4000, 1e12, 1e30, 1e308, 1e-300, -1e-300, float("nan"),
           float("inf"), float("-inf"), True, False, None, "", "no", "yes", "off", "1:30", "0x10", "~", "null",
           "default", "zero-shot", "x" * 300, "\u2028", "../..", [], {}, [True, 6], [1e300], [None], ["a", 1],
           {"a": {"b": 1}}, {"name": 1}, [{"name": "t", "kind": "classify"}]]
RAW_SNIPPETS = ["a: &x [1]\nb: *x", "k: !!python/object:os.system x", "k: !!binary aGk=", "k: 1:30",
                "k: no", "k: " + "[" * 200 + "]" * 200, "k: " + "9" * 5000, "\tk: 1", "k: [unclosed",
                "k: {a: 1, a: 2}", "? [a, b]\n: 1", "k: \"\\x00\"", "---\nk: 1\n---\nj: 2", "%YAML 1.1\n---",
                "k: 2024-01-01", "k: 0o17", "k: .NaN", "<<: {a: 1}", "k: |\n  text", "- list at top"]
JSON_LINES = ['{"input": "a", "target": "b"}', '[1, 2]', '"text"', "{bad", '{"input": 1, "target": "b", "type": "copy"}',
              '{"input": "a", "target": "b", "type": "nope"}', '{"input": "a", "target": "maybe", "type": "parity"}',
              '{"input": "a\u2028b", "target": "a\u2028b", "type": "copy"}', '{"input": ' + "[" * 3000 + "]" * 3000 + "}",
              '{"input": "a", "target": "b", "type": "copy", "n": ' + "1" * 5000 + "}", '{"input": NaN}', "\ufeff{}",
              '{"input": "a", "target": "b", "type": "copy"}\r', "\x00", '{"input": "' + "z" * 100_000 + '", '
              '"target": "z", "type": "copy"}']
BAD_BYTES = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00\x00"]


def _paths(node, prefix=()):
    """Every key path of a nested dict/list config."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(node, path, value):
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _delete(node, path):
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]


values = st.one_of(st.sampled_from(HOSTILE), st.integers(), st.floats(), st.text(max_size=12),
                   st.lists(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=4)), max_size=3))


@functools.cache
def shipped(name: str) -> dict:
    return load_yaml((ROOT / "configs" / "alter" / name).read_text())


@st.composite
def inputs(draw):
    """(config name, config YAML bytes, --set list, train.jsonl bytes, checkpoint record)."""
    name = draw(st.sampled_from(CONFIGS))
    cfg = copy.deepcopy(shipped(name))
    for _ in range(draw(st.integers(0, 4))):
        paths = list(_paths(cfg))
        op = draw(st.sampled_from(["set", "set", "set", "unknown", "delete"]))
        if op == "unknown" or not paths:
            cfg[draw(st.sampled_from(["bogus", "model", "train", "mta", "data", "lora"]))] = copy.deepcopy(draw(values))
            continue
        path = draw(st.sampled_from(paths))
        try:
            _set(cfg, path, copy.deepcopy(draw(values))) if op == "set" else _delete(cfg, path)
        except (TypeError, KeyError, IndexError):
            pass
    text = yaml.safe_dump(cfg, allow_unicode=True)
    if draw(st.integers(0, 5)) == 0:  # odd YAML appended or prepended
        snippet = draw(st.sampled_from(RAW_SNIPPETS))
        text = snippet + "\n" + text if draw(st.booleans()) else text + snippet + "\n"
    raw = text.encode()
    if draw(st.integers(0, 20)) == 0:
        raw = raw + draw(st.sampled_from(BAD_BYTES))
    sets = draw(st.lists(st.tuples(st.sampled_from(["train.batch_size", "train.max_steps", "mta.num_experts",
                                                    "mta.rank", "train.seed", "data.sampling_temperature",
                                                    "train.mixed_precision", "mta.layers", "generation.num_beams",
                                                    "data.max_length", "bogus.key", "tasks", "stage1"]),
                                   st.sampled_from(["1e12", "1e30", "-1", "1e-300", "no", "1:30", "[true, 6]",
                                                    ".nan", "{a: 1}", "[", "", "0x10", "9" * 5000, "null"])),
                         max_size=2))
    lines = (ROOT / "configs" / "alter" / "data" / "synthetic-train.jsonl").read_text().split("\n")[:12]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(JSON_LINES)))
    data = "\n".join(lines).encode()
    if draw(st.integers(0, 20)) == 0:
        data += draw(st.sampled_from(BAD_BYTES))
    record = None
    if draw(st.booleans()):
        record = draw(st.sampled_from(["data", "step", "stage", "registry", "base_model", "format_version",
                                       "has_shared_experts", "mta_config"])), draw(values)
    return name, raw, [f"{k}={v}" for k, v in sets], data, record


def _checkpoint(folder: Path, record) -> None:
    """A stage-1 checkpoint folder as `alter check` reads it (its record; weights are not opened)."""
    folder.mkdir(exist_ok=True)
    tasks = shipped("stage1.yaml")["tasks"]
    meta = {"format_version": 1, "stage": 1, "step": 10, "base_model": {"name": "default", "config_hash": "0"},
            "registry": {"tasks": [{"labels": None, **t} for t in tasks]}, "mta_config": {}, "has_shared_experts": False,
            "data": {"prompt_format": "auto", "max_length": 256, "max_target_length": 32}}
    if record is not None:
        meta[record[0]] = copy.deepcopy(record[1])
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    (folder / "adapter_model.safetensors").write_bytes(b"")


COUNTS: collections.Counter = collections.Counter()


def test_mutated_configs_and_data_give_exit_0_or_one_line_exit_2(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=N_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(inputs())
    def run(example):
        name, raw, sets, data, record = example
        (work / "train.jsonl").write_bytes(data)
        _checkpoint(work / "ck", record)
        (work / "cfg.yaml").write_bytes(raw)
        paths = [f"data.train={work / 'train.jsonl'}", f"data.eval={work / 'train.jsonl'}"]
        if name in ("stage2.yaml", "bbc-stage2.yaml", "bbc-compare-stage2.yaml", "bbc-demo-stage2.yaml"):
            paths.append(f"stage1={work / 'ck'}")
        if "eval" in name:
            paths = [f"data.eval={work / 'train.jsonl'}", f"checkpoint={work / 'ck'}", "compare=[]"]
        args = ["check", str(work / "cfg.yaml")]
        for s in paths + sets:  # the fuzzed overrides come last and win
            args += ["--set", s]
        res = runner.invoke(app, args)
        COUNTS["inputs"] += 1
        tb = res.exception is not None and not isinstance(res.exception, SystemExit)
        COUNTS["tracebacks"] += tb
        COUNTS[f"exit {res.exit_code}" if res.exit_code in (0, 2) else "other"] += 1
        assert not tb, (args, raw[:2000], data[:500], record, repr(res.exception))
        assert res.exit_code in (0, 2), (args, res.output)
        if res.exit_code == 2:
            err = res.stderr.strip().split("\n")
            assert len(err) == 1 and err[0].startswith("alter: error: "), (args, res.stderr)
        else:
            assert "config OK" in res.stdout

    try:
        run()
    finally:
        if os.environ.get("ALTER_FUZZ_REPORT"):
            with open(os.environ["ALTER_FUZZ_REPORT"], "a") as fh:
                fh.write(json.dumps(dict(COUNTS)) + "\n")
    assert COUNTS["inputs"] >= min(N_EXAMPLES, 1000) * 0.9
    assert COUNTS["exit 0"] > 0 and COUNTS["exit 2"] > 0  # the mutations reach both sides
