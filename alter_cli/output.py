"""Evaluation outputs of `alter`: metrics.json, metrics.csv, predictions.jsonl and rich tables.

One evaluated source (a checkpoint or the zero-shot base model) writes its three files into the
output folder; several (`alter eval --compare`) write one sub-folder each plus comparison.csv, a
metrics.json holding all of them, comparison_ci.csv (the first source minus each other one, per
task and macro average, with a 95 % paired-bootstrap interval) and comparison.png (each source's
score per task with its 95 % bootstrap interval, and the differences to the first source with their
paired intervals; `compare.score_intervals`). Sources named `<method>-seed<N>` are runs of one
method with several training seeds: then seeds.csv (mean, std, range over seeds and the interval
of the seed-averaged score per method and task) and seeds_ci.csv (the first method minus each other
one on the seed-averaged scores) are written too, and the figure shows the methods' seed means
with every seed's score as a dot (`compare.seed_rows`). A one-source eval folder given as a source is
reused (`load_eval_folder`), so sources evaluated in separate runs join one comparison. The folder is
assembled under a temporary name and renamed, so an
interrupted run leaves no half-written output.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .compare import has_seed_groups, score_intervals, seed_difference_rows, seed_groups, seed_rows
from .metrics import EvalResult

METRIC_COLUMNS = ("task", "kind", "n", "score", "accuracy", "macro_f1", "rouge_l", "n_unmatched")


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (f"{v:.6f}" if isinstance(v, float) else v) for c, v in row.items() if c in columns})
    return buf.getvalue()


def source_files(result: EvalResult, meta: dict[str, Any]) -> dict[str, str]:
    """The three files of one evaluated source, as {name: text}."""
    return {
        "metrics.json": json.dumps(result.report.to_dict() | {"source": meta}, sort_keys=True, indent=2) + "\n",
        "metrics.csv": _csv(result.report.rows(), METRIC_COLUMNS),
        "predictions.jsonl": "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in result.records),
    }


def comparison_rows(results: Mapping[str, EvalResult]) -> list[dict[str, Any]]:
    """One row per task (first-seen order) with each source's score, plus the macro average row."""
    tasks: dict[str, str] = {}
    for res in results.values():
        for name, m in res.report.tasks.items():
            tasks.setdefault(name, m["kind"])
    rows = []
    for name, kind in tasks.items():
        row: dict[str, Any] = {"task": name, "kind": kind}
        for label, res in results.items():
            m = res.report.tasks.get(name)
            row[label] = m["score"] if m is not None else ""
        rows.append(row)
    rows.append({"task": "macro_average", "kind": ""} | {lb: r.report.macro_average for lb, r in results.items()})
    return rows


CI_COLUMNS = ("source", "versus", "task", "difference", "ci_low", "ci_high")
SEED_COLUMNS = ("source", "task", "n_seeds", "mean", "std", "min", "max", "ci_low", "ci_high")
SEED_CI_COLUMNS = ("source", "versus", "task", "difference", "seed_std", "ci_low", "ci_high")


def bootstrap_rows(results: Mapping[str, EvalResult]) -> list[dict[str, Any]]:
    """The first source against each other one: score difference per task and macro average with
    its 95 % paired-bootstrap interval (`metrics.paired_bootstrap`, 5,000 resamples, seed 0)."""
    from .metrics import paired_bootstrap

    (first, res0), *others = results.items()
    return [{"source": first, "versus": label} | row
            for label, res in others for row in paired_bootstrap(res0, res)]


def source_labels(sources: list[str]) -> list[str]:
    """Folder/column names of the sources: `zero-shot` or the checkpoint folder's name, made unique."""
    labels: list[str] = []
    for s in sources:
        base = "zero-shot" if s == "zero-shot" else re.sub(r"[^A-Za-z0-9._-]+", "_", Path(s).name) or "checkpoint"
        label, k = base, 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def is_eval_folder(path: str | os.PathLike) -> bool:
    """True for the output folder of a one-source `alter eval` (metrics.json + predictions.jsonl, no
    checkpoint files): `alter eval` reuses such a folder as a source instead of evaluating again."""
    p = Path(path)
    return ((p / "metrics.json").is_file() and (p / "predictions.jsonl").is_file()
            and not (p / "adapter_config.json").exists() and not (p / "alter_baseline.json").exists())


def load_eval_folder(path: str | os.PathLike, rows: list[tuple[str, str, str]]) -> tuple[EvalResult, dict[str, Any]]:
    """The EvalResult and source metadata saved in a one-source eval folder, checked against ``rows``
    ((task, input, target) of every sample of the data being scored, in order).
    Raises ValueError when the folder is malformed or scored other samples."""
    from .metrics import EvalReport

    p = Path(path)
    try:
        metrics = json.loads((p / "metrics.json").read_text(encoding="utf-8"))
        records = [json.loads(x) for x in (p / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
        records.sort(key=lambda r: r["index"])
        order = dict.fromkeys(r["task"] for r in records)  # metrics.json is key-sorted: tasks in data order
        report = EvalReport(tasks={t: metrics["tasks"][t] for t in order}, macro_average=float(metrics["macro_average"]))
        scored = [(r["task"], r["input"], r["target"]) for r in records]
        meta = dict(metrics.get("source") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"eval folder {str(p)!r}: not the output of a one-source alter eval "
                         f"({exc.__class__.__name__})") from None
    if scored != rows:
        raise ValueError(f"eval folder {str(p)!r} scored other samples than the data being evaluated")
    return EvalResult(report, records), meta | {"reused_from": str(p)}


def write_folder(out: Path, files: Mapping[str, str | bytes], overwrite: bool) -> None:
    """Write {relative path: text (UTF-8) or bytes} as the folder `out`: assembled under a temporary sibling name, then
    renamed into place (an existing `out` is replaced only with `overwrite`; FileExistsError otherwise)."""
    if out.exists() and not overwrite:
        raise FileExistsError(str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for rel, text in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.rename(tmp, out)


def eval_files(results: Mapping[str, EvalResult], metas: Mapping[str, dict[str, Any]]) -> dict[str, str | bytes]:
    """Files of an `alter eval` output folder for one or several sources (see the module docstring)."""
    if len(results) == 1:
        (label, res), = results.items()
        return source_files(res, metas[label])
    files: dict[str, str | bytes] = {}
    for label, res in results.items():
        files |= {f"{label}/{name}": text for name, text in source_files(res, metas[label]).items()}
    files["comparison.csv"] = _csv(comparison_rows(results), ["task", "kind", *results])
    files["comparison_ci.csv"] = _csv(bootstrap_rows(results), CI_COLUMNS)
    seeds = has_seed_groups(list(results))
    if seeds:
        files["seeds.csv"] = _csv(seed_rows(results), SEED_COLUMNS)
        files["seeds_ci.csv"] = _csv(seed_difference_rows(results), SEED_CI_COLUMNS)
    files["comparison.png"] = comparison_png(results, by_seed=seeds)
    summary = {label: res.report.to_dict() | {"source": metas[label]} for label, res in results.items()}
    files["metrics.json"] = json.dumps(summary, sort_keys=True, indent=2) + "\n"
    return files


def metrics_table(results: Mapping[str, EvalResult], title: str = "alter eval"):
    """A rich Table: per-task metrics for one source, or the score of each source side by side."""
    from rich.table import Table

    table = Table(title=title)
    if len(results) == 1:
        (label, res), = results.items()
        for col in METRIC_COLUMNS:
            table.add_column(col, justify="left" if col in ("task", "kind") else "right")
        for row in res.report.rows():
            table.add_row(*[f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in METRIC_COLUMNS])
        return table
    table.add_column("task")
    table.add_column("kind")
    for label in results:
        table.add_column(label, justify="right")
    for row in comparison_rows(results):
        table.add_row(*[f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                        for c in ["task", "kind", *results]])
    return table


def comparison_png(results: Mapping[str, EvalResult], by_seed: bool = False, dpi: int = 120) -> bytes:
    """comparison.png as PNG bytes (matplotlib, Agg canvas, no global pyplot state).

    Left: score per task and macro average, one bar per source (or per method: the mean over its
    seeds, every seed's score a dot) with its 95 % bootstrap interval (`compare.score_intervals` /
    `compare.seed_rows`). Right: the first source (method) minus each other one with the 95 %
    paired-bootstrap interval (`bootstrap_rows` / `compare.seed_difference_rows`)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if by_seed:
        rows = seed_rows(results)
        bars = [{"source": r["source"], "task": r["task"], "score": r["mean"], "ci_low": r["ci_low"],
                 "ci_high": r["ci_high"]} for r in rows]
        per_run = score_intervals(results)
        groups = seed_groups(list(results))
        diffs = seed_difference_rows(results)
    else:
        bars = score_intervals(results)
        groups = {label: [label] for label in results}
        per_run = bars
        diffs = bootstrap_rows(results)
    sources = list(groups)
    tasks = list(dict.fromkeys(r["task"] for r in bars))
    get = {(r["source"], r["task"]): r for r in bars}
    run_score = {(r["source"], r["task"]): r["score"] for r in per_run}
    fig = Figure(figsize=(max(9.0, 0.35 * len(tasks) * len(sources) + 5.0), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax, axd = fig.subplots(1, 2, width_ratios=[3, 2])
    x = np.arange(len(tasks))
    width = 0.8 / max(1, len(sources))
    colours = [f"C{i % 10}" for i in range(len(sources))]
    for i, src in enumerate(sources):
        vals = np.array([get[(src, t)]["score"] for t in tasks])
        err = np.array([[vals[k] - get[(src, t)]["ci_low"], get[(src, t)]["ci_high"] - vals[k]]
                        for k, t in enumerate(tasks)]).T
        pos = x - 0.4 + width * (i + 0.5)
        label = src if len(groups[src]) == 1 else f"{src} ({len(groups[src])} seeds)"
        ax.bar(pos, vals, width, yerr=err, capsize=2, color=colours[i], label=label, alpha=0.85)
        if len(groups[src]) > 1:
            for m in groups[src]:
                ax.plot(pos + width * 0.25, [run_score[(m, t)] for t in tasks], "o", markersize=3, zorder=3,
                        markerfacecolor="white", markeredgecolor="black", markeredgewidth=0.6)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("score (accuracy / ROUGE-L F)")
    ax.set_ylim(0, 1.05)
    ax.set_title("score, 95 % bootstrap interval" + (" (dots: seeds)" if by_seed else ""), fontsize="medium")
    ax.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.08), ncols=min(3, len(sources)))
    first = sources[0]
    others = [s for s in sources if s != first]
    dget = {(r["versus"], r["task"]): r for r in diffs}
    yd = np.arange(len(tasks))
    h = 0.8 / max(1, len(others))
    for j, other in enumerate(others):
        d = np.array([dget[(other, t)]["difference"] for t in tasks])
        lo = np.array([dget[(other, t)]["ci_low"] for t in tasks])
        hi = np.array([dget[(other, t)]["ci_high"] for t in tasks])
        pos = yd - 0.4 + h * (j + 0.5)
        axd.errorbar(d, pos, xerr=[d - lo, hi - d], fmt="o", capsize=2, color=colours[sources.index(other)],
                     label=f"{first} − {other}", markersize=4)
    axd.axvline(0.0, color="grey", linewidth=0.8)
    axd.set_yticks(yd, tasks)
    axd.invert_yaxis()
    axd.set_xlabel("difference, 95 % paired bootstrap")
    axd.set_title(f"{first} minus …", fontsize="medium")
    if others:
        axd.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.08), ncols=min(2, len(others)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
