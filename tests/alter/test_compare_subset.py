"""bench/compare_subset.py: the seed tables on a slice of each task's examples, from predictions.jsonl."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("compare_subset", ROOT / "bench" / "compare_subset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(eval_dir: Path, scores: dict[str, dict[str, list[float]]]) -> None:
    """scores: source -> task -> per-example scores (same lengths for every source)."""
    eval_dir.mkdir()
    tasks = list(next(iter(scores.values())))
    with (eval_dir / "comparison.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "kind", *scores])
        for t in tasks:
            w.writerow([t, "classify", *(np.mean(s[t]) for s in scores.values())])
    for label, per_task in scores.items():
        (eval_dir / label).mkdir()
        rows, i = [], 0
        for t in tasks:
            for s in per_task[t]:
                rows.append(json.dumps({"index": i, "task": t, "score": s}))
                i += 1
        (eval_dir / label / "predictions.jsonl").write_text("\n".join(rows) + "\n")


def test_slice_gives_the_difference_of_the_sliced_means(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = {lab: {t: list(rng.integers(0, 2, 12).astype(float)) for t in ("a", "b")}
              for lab in ("mta-seed1", "mta-seed2", "lora-seed1", "lora-seed2")}
    _write(tmp_path / "eval", scores)
    mod = _module()
    res = mod.load(tmp_path / "eval", 4, 10)
    assert all(len(r.records) == 12 for r in res.values())  # 6 per task
    rows = {(r["versus"], r["task"]): r for r in mod.seed_difference_rows(res)}
    for t in ("a", "b"):
        want = np.mean([np.mean(scores[f"mta-seed{s}"][t][4:10]) - np.mean(scores[f"lora-seed{s}"][t][4:10])
                        for s in (1, 2)])
        assert rows[("lora", t)]["difference"] == pytest.approx(want, abs=1e-12)
    macro = np.mean([rows[("lora", t)]["difference"] for t in ("a", "b")])
    assert rows[("lora", "macro_average")]["difference"] == pytest.approx(macro, abs=1e-12)


def test_missing_folder_and_empty_slice_exit_2(tmp_path: Path, capsys) -> None:
    mod = _module()
    assert mod.main([str(tmp_path / "none")]) == 2
    assert "comparison.csv not found" in capsys.readouterr().err
    _write(tmp_path / "eval", {"x": {"a": [1.0, 0.0]}, "y": {"a": [0.0, 0.0]}})
    assert mod.main([str(tmp_path / "eval"), "--start", "5"]) == 2
    assert "no examples" in capsys.readouterr().err
    assert mod.main([str(tmp_path / "eval"), "--stop", "1"]) == 0
    assert "| x − y | a | +1.000 |" in capsys.readouterr().out


def test_with_joins_a_later_eval_of_the_same_examples(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    new = {lab: {t: list(rng.integers(0, 2, 8).astype(float)) for t in ("a", "b")} for lab in ("cap-seed1", "cap-seed2")}
    old = {lab: {t: list(rng.integers(0, 2, 8).astype(float)) for t in ("a", "b")} for lab in ("mta-seed1", "mta-seed2")}
    _write(tmp_path / "new", new)
    _write(tmp_path / "old", old)
    mod = _module()
    res = mod.load(tmp_path / "new", 0, None)
    mod.join(res, mod.load(tmp_path / "old", 0, None), tmp_path / "old")
    assert list(res) == ["cap-seed1", "cap-seed2", "mta-seed1", "mta-seed2"]  # the first folder's first
    rows = {(r["versus"], r["task"]): r for r in mod.seed_difference_rows(res)}
    want = np.mean([np.mean(new[f"cap-seed{s}"]["b"]) - np.mean(old[f"mta-seed{s}"]["b"]) for s in (1, 2)])
    assert rows[("mta", "b")]["difference"] == pytest.approx(want, abs=1e-12)
    assert mod.main([str(tmp_path / "new"), "--with", str(tmp_path / "old")]) == 0
    assert "+ " + str(tmp_path / "old") in capsys.readouterr().out
    # the same folder twice: its labels collide; another split: refused
    assert mod.main([str(tmp_path / "new"), "--with", str(tmp_path / "new")]) == 2
    assert "already in the comparison" in capsys.readouterr().err
    _write(tmp_path / "short", {"mta-seed3": {"a": [1.0] * 8, "b": [1.0] * 7}})
    assert mod.main([str(tmp_path / "new"), "--with", str(tmp_path / "short")]) == 2
    assert "other examples" in capsys.readouterr().err
