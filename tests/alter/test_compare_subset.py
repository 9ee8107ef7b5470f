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
