"""Comparison statistics (alter_cli.compare) and the files `alter eval` writes for several sources:
score intervals, seed groups, seeds.csv / seeds_ci.csv, comparison.png."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from alter_cli import compare
from alter_cli.metrics import EvalReport, EvalResult
from alter_cli.output import eval_files


def result(scores: dict[str, list[float]]) -> EvalResult:
    """An EvalResult with the given per-sample scores per task (samples indexed in task order)."""
    records, tasks, i = [], {}, 0
    for task, vals in scores.items():
        for v in vals:
            records.append({"index": i, "task": task, "score": float(v)})
            i += 1
        tasks[task] = {"kind": "classify", "n": len(vals), "score": float(np.mean(vals))}
    return EvalResult(EvalReport(tasks, float(np.mean([t["score"] for t in tasks.values()]))), records)


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_seed_groups():
    labels = ["stage2-seed1", "stage2-seed2", "lora_seed1", "lora_seed2", "lora_seed3", "zero-shot"]
    assert compare.seed_groups(labels) == {"stage2": ["stage2-seed1", "stage2-seed2"],
                                           "lora": ["lora_seed1", "lora_seed2", "lora_seed3"],
                                           "zero-shot": ["zero-shot"]}
    assert compare.has_seed_groups(labels) and not compare.has_seed_groups(["a", "b-seed1"])
    with pytest.raises(ValueError, match="both a method name"):
        compare.seed_groups(["lora", "lora-seed1", "lora-seed2"])


def test_score_intervals_exact_for_constant_scores_and_cover_the_mean():
    rng = np.random.default_rng(0)
    res = {"a": result({"t1": [1.0] * 20, "t2": list(rng.random(40))}), "b": result({"t1": [0.0] * 20, "t2": [0.5] * 40})}
    rows = {(r["source"], r["task"]): r for r in compare.score_intervals(res)}
    assert rows[("a", "t1")]["score"] == rows[("a", "t1")]["ci_low"] == rows[("a", "t1")]["ci_high"] == 1.0
    assert rows[("b", "t2")]["ci_low"] == rows[("b", "t2")]["ci_high"] == 0.5
    t2 = rows[("a", "t2")]
    assert t2["ci_low"] < t2["score"] < t2["ci_high"]
    # the interval is the bootstrap of the mean: width ≈ 2·1.96·sd/sqrt(n)
    sd = np.std([r["score"] for r in res["a"].records if r["task"] == "t2"]) / np.sqrt(40)
    assert t2["ci_high"] - t2["ci_low"] == pytest.approx(2 * 1.96 * sd, rel=0.15)
    macro = rows[("a", "macro_average")]
    assert macro["score"] == pytest.approx((1.0 + t2["score"]) / 2)
    with pytest.raises(ValueError, match="other samples"):
        compare.score_intervals({"a": res["a"], "c": result({"t1": [1.0] * 19, "t2": [0.0] * 40})})


def test_seed_rows_mean_std_and_seed_averaged_interval():
    res = {"m-seed1": result({"t": [1, 1, 0, 0]}), "m-seed2": result({"t": [1, 1, 1, 0]}),
           "m-seed3": result({"t": [1, 0, 0, 0]}), "z": result({"t": [0, 0, 0, 0]})}
    rows = {(r["source"], r["task"]): r for r in compare.seed_rows(res)}
    m = rows[("m", "t")]
    assert m["n_seeds"] == 3 and m["mean"] == pytest.approx(0.5) and m["std"] == pytest.approx(0.25)
    assert (m["min"], m["max"]) == (0.25, 0.75)
    # seed-averaged per-sample scores are [1, 2/3, 1/3, 0]: the interval lies inside [0, 1] around 0.5
    assert 0.0 <= m["ci_low"] < 0.5 < m["ci_high"] <= 1.0
    assert rows[("z", "t")]["std"] == "" and rows[("z", "t")]["mean"] == 0.0


def test_seed_difference_rows_paired_over_seeds():
    res = {"a-seed1": result({"t": [1, 1, 0, 0]}), "a-seed2": result({"t": [1, 1, 1, 1]}),
           "b-seed1": result({"t": [0, 1, 0, 0]}), "b-seed2": result({"t": [0, 0, 0, 1]})}
    (row_t, row_macro) = compare.seed_difference_rows(res)
    assert row_t["versus"] == "b" and row_t["difference"] == pytest.approx(0.75 - 0.25)
    # per-seed differences: seed1 0.5 - 0.25 = 0.25, seed2 1.0 - 0.25 = 0.75 -> std (ddof 1) = 0.3536
    assert row_t["seed_std"] == pytest.approx(np.std([0.25, 0.75], ddof=1))
    assert row_macro["task"] == "macro_average" and row_macro["difference"] == pytest.approx(0.5)


def test_eval_files_write_png_and_seed_tables():
    res = {"s2-seed1": result({"t1": [1, 0, 1, 1], "t2": [0.5, 0.2, 0.1, 0.9]}),
           "s2-seed2": result({"t1": [1, 1, 1, 0], "t2": [0.4, 0.3, 0.2, 0.8]}),
           "lora-seed1": result({"t1": [0, 0, 1, 1], "t2": [0.1, 0.2, 0.1, 0.3]}),
           "lora-seed2": result({"t1": [0, 1, 0, 1], "t2": [0.2, 0.2, 0.0, 0.4]}),
           "zero-shot": result({"t1": [0, 0, 0, 0], "t2": [0.0, 0.1, 0.0, 0.0]})}
    files = eval_files(res, {k: {} for k in res})
    png = files["comparison.png"]
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    seeds = rows_of(files["seeds.csv"])
    assert [(r["source"], r["task"]) for r in seeds[:3]] == [("s2", "t1"), ("s2", "t2"), ("s2", "macro_average")]
    assert float(seeds[0]["mean"]) == pytest.approx(0.75) and seeds[-1]["n_seeds"] == "1"
    diff = rows_of(files["seeds_ci.csv"])
    assert {r["versus"] for r in diff} == {"lora", "zero-shot"}
    assert eval_files(res, {k: {} for k in res})["comparison.png"] == png  # deterministic bytes
    plain = eval_files({"a": res["zero-shot"], "b": res["lora-seed1"]}, {"a": {}, "b": {}})
    assert "seeds.csv" not in plain and plain["comparison.png"].startswith(b"\x89PNG")
