"""Statistics of a comparison of several evaluated sources: per-source score intervals and seeds.

`alter eval` with several sources scores them on the same samples. Beside the paired bootstrap of
differences (`metrics.paired_bootstrap`) this module gives

- :func:`score_intervals`: each source's score per task and macro average with a 95 % bootstrap
  percentile interval, every source resampled with the *same* draws (paired), stratified by task
  (Efron & Tibshirani 1993, ch. 13), for the error bars of ``comparison.png``;
- :func:`seed_groups` / :func:`seed_rows` / :func:`seed_difference_rows`: training seeds. Sources
  whose label ends in ``-seed<N>`` (or ``_seed<N>``; e.g. checkpoint folders ``lora-seed1``,
  ``lora-seed2``, ``lora-seed3``) are runs of one method with different ``train.seed``; for each
  such group the mean and sample standard deviation (ddof 1) of the score over seeds, its range,
  and the bootstrap interval of the seed-averaged score (per sample, the mean over the group's
  seeds, then resampled as above): the spread across seeds is the training noise, the interval the
  test-sample noise. Differences between groups take the paired bootstrap of the seed-averaged
  per-sample scores.

Pure functions over ``metrics.EvalResult`` records (``index``, ``task``, ``score`` per sample).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SEED_RE = re.compile(r"^(?P<method>.+?)[-_]seed(?P<seed>\d+)$")
N_RESAMPLES = 5000
CONFIDENCE = 0.95


def seed_groups(labels: Sequence[str]) -> dict[str, list[str]]:
    """Method name → its source labels, in first-seen order. ``lora-seed2`` belongs to ``lora``; a label
    without a seed suffix is a group of its own. Raises ValueError when a label without a suffix
    equals a method name that also has seeded labels (ambiguous)."""
    groups: dict[str, list[str]] = {}
    plain = set()
    for label in labels:
        m = SEED_RE.match(label)
        method = m.group("method") if m else label
        if not m:
            plain.add(label)
        groups.setdefault(method, []).append(label)
    clash = [g for g, members in groups.items() if g in plain and len(members) > 1]
    if clash:
        raise ValueError(f"source {clash[0]!r} is both a method name and a run of its seeded group")
    return groups


def _scores(result: Any) -> tuple[list[str], dict[str, np.ndarray], list[tuple[int, str]]]:
    keys = [(r["index"], r["task"]) for r in result.records]
    tasks = list(dict.fromkeys(r["task"] for r in result.records))
    per_task = {t: np.array([float(r["score"]) for r in result.records if r["task"] == t]) for t in tasks}
    return tasks, per_task, keys


def _aligned(results: Mapping[str, Any]) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """Tasks and per-source per-task score arrays; all sources must score the same samples."""
    first_keys, tasks, scores = None, [], {}
    for label, res in results.items():
        t, per_task, keys = _scores(res)
        if first_keys is None:
            first_keys, tasks = keys, t
        elif keys != first_keys:
            raise ValueError(f"source {label!r} scores other samples than the first source")
        scores[label] = per_task
    return tasks, scores


def _intervals(tasks: list[str], scores: Mapping[str, Mapping[str, np.ndarray]], seed: int):
    """{label: {task | macro_average: (mean, low, high)}} with one set of draws for all labels."""
    rng = np.random.default_rng(seed)
    alpha = (1.0 - CONFIDENCE) / 2.0
    draws = {t: rng.integers(0, len(next(iter(scores.values()))[t]), size=(N_RESAMPLES, len(next(iter(
        scores.values()))[t]))) for t in tasks}
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for label, per_task in scores.items():
        row, boots = {}, []
        for t in tasks:
            boot = per_task[t][draws[t]].mean(axis=1)
            boots.append(boot)
            row[t] = (float(per_task[t].mean()), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha)))
        macro = np.mean(boots, axis=0)
        row["macro_average"] = (float(np.mean([row[t][0] for t in tasks])), float(np.quantile(macro, alpha)),
                                float(np.quantile(macro, 1 - alpha)))
        out[label] = row
    return out


def score_intervals(results: Mapping[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """One row per source and task (then macro_average): source, task, score, ci_low, ci_high.
    Raises ValueError when the sources score different samples."""
    tasks, scores = _aligned(results)
    iv = _intervals(tasks, scores, seed)
    return [{"source": label, "task": t, "score": s, "ci_low": lo, "ci_high": hi}
            for label, row in iv.items() for t, (s, lo, hi) in row.items()]


def _group_means(groups: Mapping[str, Sequence[str]], scores: Mapping[str, Mapping[str, np.ndarray]], tasks):
    return {g: {t: np.mean([scores[m][t] for m in members], axis=0) for t in tasks} for g, members in groups.items()}


def seed_rows(results: Mapping[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Per method group and task (then macro_average): source (the method), n_seeds, mean, std (ddof 1;
    empty for one seed), min, max over the seeds' scores, and ci_low/ci_high: the 95 % bootstrap
    interval of the seed-averaged score."""
    tasks, scores = _aligned(results)
    groups = seed_groups(list(results))
    per_run = _intervals(tasks, scores, seed)
    iv = _intervals(tasks, _group_means(groups, scores, tasks), seed)
    rows = []
    for g, members in groups.items():
        for t in [*tasks, "macro_average"]:
            vals = np.array([per_run[m][t][0] for m in members])
            rows.append({"source": g, "task": t, "n_seeds": len(members), "mean": float(vals.mean()),
                         "std": float(vals.std(ddof=1)) if len(vals) > 1 else "", "min": float(vals.min()),
                         "max": float(vals.max()), "ci_low": iv[g][t][1], "ci_high": iv[g][t][2]})
    return rows


def seed_difference_rows(results: Mapping[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """The first method group minus each other one, per task and macro average: difference of the
    seed-averaged scores with its 95 % paired-bootstrap interval, and the std over seeds of the
    per-seed differences where both groups ran the same seeds (else empty)."""
    tasks, scores = _aligned(results)
    groups = seed_groups(list(results))
    means = _group_means(groups, scores, tasks)
    (first, firsts), *others = groups.items()
    rng = np.random.default_rng(seed)
    alpha = (1.0 - CONFIDENCE) / 2.0
    draws = {t: rng.integers(0, len(means[first][t]), size=(N_RESAMPLES, len(means[first][t]))) for t in tasks}

    def seed_of(label: str) -> str | None:
        m = SEED_RE.match(label)
        return m.group("seed") if m else None

    rows = []
    for g, members in others:
        paired = sorted({seed_of(m) for m in firsts}) == sorted({seed_of(m) for m in members}) and len(members) > 1
        by_seed_a = {seed_of(m): m for m in firsts}
        boots = []
        for t in [*tasks, "macro_average"]:
            if t == "macro_average":
                boot = np.mean(boots, axis=0)
                diff = float(np.mean([r["difference"] for r in rows[-len(tasks):]]))
            else:
                d = means[first][t] - means[g][t]
                boot = d[draws[t]].mean(axis=1)
                boots.append(boot)
                diff = float(d.mean())
            std = ""
            if paired:
                per_seed = []
                for m in members:
                    a = scores[by_seed_a[seed_of(m)]]
                    pa = np.mean([a[x].mean() for x in tasks]) if t == "macro_average" else a[t].mean()
                    pb = np.mean([scores[m][x].mean() for x in tasks]) if t == "macro_average" else scores[m][t].mean()
                    per_seed.append(pa - pb)
                std = float(np.std(per_seed, ddof=1))
            rows.append({"source": first, "versus": g, "task": t, "difference": diff, "seed_std": std,
                         "ci_low": float(np.quantile(boot, alpha)), "ci_high": float(np.quantile(boot, 1 - alpha))})
    return rows


def has_seed_groups(labels: Sequence[str]) -> bool:
    """True when at least one method has two or more seeded runs among ``labels``."""
    try:
        return any(len(m) > 1 for m in seed_groups(labels).values())
    except ValueError:
        return False
