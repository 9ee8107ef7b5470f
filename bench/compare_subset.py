"""Re-score a finished `alter eval` comparison on a slice of each task's test examples.

The BBC test split of 2 December (second run) has 200 articles per task whose first 50 are, example
for example, the test split of the first run (a label-balanced prefix of the same seeded order,
`alter_cli.sources.bbc`). This script reads the per-example scores the eval already wrote
(`<eval>/<source>/predictions.jsonl`) and repeats the seed tables on positions [start, stop) of
every task, so the 150 articles no run had scored before can be reported on their own:

    python bench/compare_subset.py runs/compare/eval --start 50            # the 150 new articles
    python bench/compare_subset.py runs/compare/eval --stop 50             # the first run's 50

`--with DIR` (repeatable) adds the sources of another `alter eval` of the same examples, after those
of the first folder, so a method scored later (bench/compare_stage2_variants.sh,
compare_lora_total.sh) is compared, paired, with predictions written earlier without scoring those
again. The examples must be the same, in the same order (task, input and target of every record);
a label present in two folders is refused.

Prints the mean ± std over seeds per method and the first method minus each other one with the
95 % paired bootstrap (`alter_cli.compare.seed_rows` / `seed_difference_rows`, the functions behind
seeds.csv and seeds_ci.csv). Sources: every sub-folder with predictions.jsonl, the first one as in
the eval's comparison.csv column order. Exits 2 with one line when a folder or column is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from alter_cli.compare import seed_difference_rows, seed_rows


def load(eval_dir: Path, start: int, stop: int | None) -> dict[str, SimpleNamespace]:
    """Source label -> object with .records restricted to task positions [start, stop)."""
    table = eval_dir / "comparison.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found (not an `alter eval` comparison folder)")
    with table.open() as f:
        labels = [c for c in next(csv.reader(f)) if c not in ("task", "kind")]
    out = {}
    for label in labels:
        path = eval_dir / label / "predictions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        seen: dict[str, int] = {}
        records = []
        for line in path.read_text().splitlines():
            r = json.loads(line)
            pos = seen.get(r["task"], 0)
            seen[r["task"]] = pos + 1
            if pos >= start and (stop is None or pos < stop):
                records.append(r)
        if not records:
            raise ValueError(f"{path}: no examples at task positions [{start}, {stop})")
        out[label] = SimpleNamespace(records=records)
    return out


def join(first: dict[str, SimpleNamespace], other: dict[str, SimpleNamespace], where: Path) -> None:
    """Add the sources of `other` (from folder `where`) to `first`, in place. Raises ValueError when a
    label is in both or when `other` scored other examples (task, input, target) than `first`."""
    def keys(res: SimpleNamespace) -> list[tuple]:
        return [(r["task"], r.get("input"), r.get("target")) for r in res.records]

    ref = keys(next(iter(first.values())))
    for label, res in other.items():
        if label in first:
            raise ValueError(f"source {label!r} of {where} is already in the comparison")
        if keys(res) != ref:
            raise ValueError(f"{where / label}: scored other examples than the first folder (not the same split)")
        first[label] = res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--start", type=int, default=0, help="first position within each task (0-based)")
    ap.add_argument("--stop", type=int, default=None, help="one past the last position (default: all)")
    ap.add_argument("--with", dest="others", type=Path, action="append", default=[],
                    help="another eval folder of the same examples whose sources are added (repeatable)")
    args = ap.parse_args(argv)
    try:
        results = load(args.eval_dir, args.start, args.stop)
        for other in args.others:
            join(results, load(other, args.start, args.stop), other)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = Counter(r["task"] for r in next(iter(results.values())).records)
    joined = "".join(f" + {o}" for o in args.others)
    print(f"# {args.eval_dir}{joined}, task positions [{args.start}, {args.stop if args.stop is not None else 'end'}): "
          + ", ".join(f"{t} {k}" for t, k in n.items()))
    print("| method | task | mean | std over seeds | 95 % bootstrap |")
    print("|---|---|---:|---:|---|")
    for r in seed_rows(results):
        std = f"{r['std']:.3f}" if r["std"] != "" else ""
        print(f"| {r['source']} | {r['task']} | {r['mean']:.3f} | {std} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] |")
    print()
    print("| difference | task | mean over seeds | std of per-seed differences | 95 % paired bootstrap |")
    print("|---|---|---:|---:|---|")
    for r in seed_difference_rows(results):
        std = f"{r['seed_std']:.3f}" if r["seed_std"] != "" else ""
        print(f"| {r['source']} − {r['versus']} | {r['task']} | {r['difference']:+.3f} | {std} | "
              f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
