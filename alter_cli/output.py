"""Evaluation outputs of `alter`: metrics.json, metrics.csv, predictions.jsonl and rich tables.

One evaluated source (a checkpoint or the zero-shot base model) writes its three files into the
output folder; several (`alter eval --compare`) write one sub-folder each plus comparison.csv, a
metrics.json holding all of them, and comparison_ci.csv (the first source minus each other one, per
task and macro average, with a 95 % paired-bootstrap interval). The folder is assembled under a temporary name and renamed, so an
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

from .evaluate import EvalResult

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


def bootstrap_rows(results: Mapping[str, EvalResult]) -> list[dict[str, Any]]:
    """The first source against each other one: score difference per task and macro average with
    its 95 % paired-bootstrap interval (`evaluate.paired_bootstrap`, 5,000 resamples, seed 0)."""
    from .evaluate import paired_bootstrap

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


def write_folder(out: Path, files: Mapping[str, str], overwrite: bool) -> None:
    """Write {relative path: text} as the folder `out`: assembled under a temporary sibling name, then
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
        path.write_text(text, encoding="utf-8")
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.rename(tmp, out)


def eval_files(results: Mapping[str, EvalResult], metas: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """Files of an `alter eval` output folder for one or several sources (see the module docstring)."""
    if len(results) == 1:
        (label, res), = results.items()
        return source_files(res, metas[label])
    files: dict[str, str] = {}
    for label, res in results.items():
        files |= {f"{label}/{name}": text for name, text in source_files(res, metas[label]).items()}
    files["comparison.csv"] = _csv(comparison_rows(results), ["task", "kind", *results])
    files["comparison_ci.csv"] = _csv(bootstrap_rows(results), CI_COLUMNS)
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
