"""Per-task metrics of multi-task learners: label matching, accuracy / macro-F1, ROUGE-L, the report,
and the paired bootstrap of two sources' score difference.

Spec: ``shared/spec/alter.md`` section 4 (evaluation). Pure: nothing here reads or writes files, prints,
or exits. Generation is in :mod:`alter_cli.generation`, the evaluation of a data set in
:mod:`alter_cli.evaluate`.

Metrics per task kind
- ``classify`` and ``nli`` (closed label sets): the generated text is normalised (Unicode NFKC,
  case-folded, punctuation removed, whitespace collapsed) and matched to the task's label set;
  a prediction that matches no label is counted as wrong and reported (``n_unmatched``).
  Reported: ``accuracy`` and ``macro_f1``.
- ``generate`` (free text): ROUGE-L F-measure (Lin 2004, "ROUGE: A Package for Automatic Evaluation
  of Summaries", longest common subsequence) computed by the ``rouge-score`` package, word-level
  for English and character-level for CJK text (see :class:`RougeTokenizer`).

Each task gets one ``score`` (accuracy for classify/nli, ROUGE-L for generate, all in [0, 1]); the
``macro average`` is the unweighted mean of the task scores.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import TASK_KINDS, TaskSpec

LABEL_KINDS = ("classify", "nli")

# --------------------------------------------------------------------------------------------------
# Text normalisation and label matching
# --------------------------------------------------------------------------------------------------

# CJK Unified Ideographs (+ extension A, compatibility ideographs), Hiragana, Katakana, Hangul syllables.
_CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F),  # CJK extensions B-F, compatibility supplement
)
_CJK_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _CJK_RANGES)
_CJK_RE = re.compile(f"[{_CJK_CLASS}]")
# One ROUGE token: a run of lower-case latin letters/digits, or one CJK character.
_ROUGE_TOKEN_RE = re.compile(f"[a-z0-9]+|[{_CJK_CLASS}]")
_SPACES_RE = re.compile(r"\s+")


def is_cjk(text: str) -> bool:
    """True when ``text`` holds at least one CJK character (Han, kana or Hangul)."""
    return _CJK_RE.search(text) is not None


def normalize_text(text: str) -> str:
    """Normalise a prediction or label for matching.

    NFKC (full-width forms -> ASCII), case-folding, every Unicode punctuation or symbol character
    (categories P* and S*) replaced by a space, whitespace collapsed and stripped.
    ``"  Sport!\\n"`` -> ``"sport"``; ``"蕴含。"`` -> ``"蕴含"``.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return _SPACES_RE.sub(" ", text).strip()


LABEL_MATCH_MODES = ("exact", "prefix", "search")


def _label_at(norm: str, start: int, norm_label: str) -> bool:
    """True when ``norm_label`` occurs in ``norm`` at ``start`` as whole words (word boundaries on
    both sides: the text's ends, a space, or a CJK character on either side)."""
    if not norm_label or not norm.startswith(norm_label, start):
        return False
    end = start + len(norm_label)
    before = start == 0 or norm[start - 1] == " " or is_cjk(norm[start - 1]) or is_cjk(norm_label[0])
    after = end == len(norm) or norm[end] == " " or is_cjk(norm[end]) or is_cjk(norm_label[-1])
    return before and after


def match_label(prediction: str, labels: Sequence[str], *, mode: str = "prefix") -> str | None:
    """Map a generated text onto a task's label set.

    mode ``exact``: the normalised text (:func:`normalize_text`) equals a normalised label.
    ``prefix`` (default): exact, else the text *starts* with a label as whole words (generation often
    runs on past the label: "sport. The article ..."); the longest such label wins.
    ``search``: exact or prefix, else the labels that occur anywhere in the text as whole words
    ("The topic of this article is sports."); matched only when exactly one distinct label occurs
    (overlapping labels count once: "not entailment" hides the "entailment" inside it) — a text
    naming two labels is ambiguous and left unmatched.
    Returns the label as written in ``labels``, or None (the prediction then counts as wrong).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in LABEL_MATCH_MODES:
        raise ValueError(f"label match mode must be one of {', '.join(LABEL_MATCH_MODES)}, got {mode!r}")
    norm = normalize_text(prediction)
    normalized_labels = [(normalize_text(label), label) for label in labels]
    for norm_label, label in normalized_labels:
        if norm == norm_label:
            return label
    if mode == "exact":
        return None
    prefixed = [(len(nl), label) for nl, label in normalized_labels if _label_at(norm, 0, nl)]
    if prefixed:
        return max(prefixed)[1]
    if mode == "prefix":
        return None
    # search: every whole-word occurrence; a label inside a longer found label's span is dropped.
    spans = []
    for norm_label, label in normalized_labels:
        start = norm.find(norm_label) if norm_label else -1
        while start >= 0:
            if _label_at(norm, start, norm_label):
                spans.append((start, start + len(norm_label), label))
            start = norm.find(norm_label, start + 1)
    found = {label for s0, e0, label in spans
             if not any(s1 <= s0 and e0 <= e1 and (e1 - s1) > (e0 - s0) for s1, e1, _ in spans)}
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def classification_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    labels: Sequence[str],
    *,
    label_match: str = "prefix",
) -> dict:
    """Accuracy and macro-F1 of generated texts against reference labels of a closed label set.

    Args:
        predictions: N generated texts (raw; normalised and matched here, see :func:`match_label`).
        references: N reference labels; each must be in ``labels`` after normalisation.
        labels: the task's label set.

    Returns:
        dict with ``n``, ``accuracy`` (fraction of predictions whose matched label is the reference),
        ``macro_f1`` (mean over the labels present in the references or the matched predictions of
        F1_l = 2 TP_l / (2 TP_l + FP_l + FN_l); an unmatched prediction is a false negative of its
        reference label and a false positive of none), ``n_unmatched`` and ``unmatched`` (the first
        10 unmatched predictions, verbatim), ``matched`` (N matched labels or None).

    Raises:
        ValueError: empty input, length mismatch, empty label set, or a reference outside the set.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    if not labels:
        raise ValueError("empty label set")
    index = {label: i for i, label in enumerate(labels)}
    ref_ids = np.empty(len(references), dtype=np.int64)
    for i, ref in enumerate(references):
        label = match_label(ref, labels, mode="exact")
        if label is None:
            raise ValueError(f"reference {ref!r} is not in the label set {list(labels)}")
        ref_ids[i] = index[label]
    matched = [match_label(p, labels, mode=label_match) for p in predictions]
    # Unmatched predictions get the id L (one past the label set): wrong for every reference.
    n_labels = len(labels)
    pred_ids = np.array([n_labels if m is None else index[m] for m in matched], dtype=np.int64)
    confusion = np.zeros((n_labels + 1, n_labels + 1), dtype=np.int64)
    np.add.at(confusion, (ref_ids, pred_ids), 1)
    tp = np.diag(confusion)[:n_labels]
    fn = confusion[:n_labels].sum(axis=1) - tp
    fp = confusion[:, :n_labels].sum(axis=0) - tp
    present = (tp + fn + fp) > 0
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(n_labels), where=present)
    unmatched = [p for p, m in zip(predictions, matched, strict=True) if m is None]
    return {
        "n": len(predictions),
        "accuracy": float(tp.sum() / len(predictions)),
        "macro_f1": float(f1[present].mean()),
        "n_unmatched": len(unmatched),
        "unmatched": unmatched[:10],
        "matched": matched,
    }


class RougeTokenizer:
    """Tokenizer for ``rouge_score.rouge_scorer.RougeScorer``: words for English, characters for CJK.

    Lower-cases the text, then takes as tokens the runs of ``[a-z0-9]`` (identical to rouge-score's
    default tokenizer on English text) and every CJK character on its own (rouge-score's default
    drops non-ASCII characters, which would score all Chinese text as empty). Punctuation and
    whitespace are dropped.
    """

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure of each prediction against its reference, shape (N,), values in [0, 1].

    Computed by ``rouge-score`` (``rougeL``: LCS over the whole text) with :class:`RougeTokenizer`.

    Raises:
        ValueError: length mismatch.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())
    return np.array(
        [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)],
        dtype=np.float64,
    )


@dataclass
class EvalReport:
    """Per-task metrics and their macro average.

    ``tasks`` maps task name -> metrics dict: ``kind``, ``n``, ``score`` and, per kind,
    ``accuracy``/``macro_f1``/``n_unmatched``/``unmatched`` (classify, nli) or ``rouge_l`` (generate).
    ``macro_average`` is the mean of the task scores; ``per_sample`` holds, in input order, each
    sample's score (1/0 for classify/nli, ROUGE-L for generate) and matched label (or None).
    """

    tasks: dict[str, dict]
    macro_average: float
    per_sample: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"macro_average": self.macro_average, "tasks": self.tasks}

    def rows(self) -> list[dict]:
        """One flat row per task plus a final ``macro_average`` row (for CSV and tables)."""
        columns = ("task", "kind", "n", "score", "accuracy", "macro_f1", "rouge_l", "n_unmatched")
        rows = [{c: ({"task": name} | m).get(c, "") for c in columns} for name, m in self.tasks.items()]
        rows.append({c: "" for c in columns} | {"task": "macro_average", "score": self.macro_average})
        return rows


def compute_metrics(
    tasks: Sequence[TaskSpec],
    task_names: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    label_match: str = "prefix",
) -> EvalReport:
    """Score N predictions grouped by task and average the task scores.

    Args:
        tasks: the task specs (name, kind, labels), e.g. ``TaskRegistry.tasks``.
        task_names: (N,) task of each sample.
        predictions: (N,) generated texts.
        references: (N,) targets.

    Returns:
        :class:`EvalReport`; tasks appear in the order of ``tasks`` (registry order), those without
        samples omitted.

    Raises:
        ValueError: length mismatch, a sample of an unknown task, an unknown task kind, a reference
        outside its task's label set, or no samples at all.
    """
    n = len(task_names)
    if not (len(predictions) == n == len(references)):
        raise ValueError(
            f"length mismatch: {n} task names, {len(predictions)} predictions, {len(references)} references"
        )
    if n == 0:
        raise ValueError("no samples to score")
    known = [spec.name for spec in tasks]
    unknown = sorted(set(task_names) - set(known))
    if unknown:
        raise ValueError(f"samples of unknown task(s) {unknown}; known: {known}")
    per_sample: list[dict] = [{} for _ in range(n)]
    results: dict[str, dict] = {}
    for spec in tasks:
        name = spec.name
        idx = [i for i, t in enumerate(task_names) if t == name]
        if not idx:
            continue
        preds = [predictions[i] for i in idx]
        refs = [references[i] for i in idx]
        if spec.kind in LABEL_KINDS:
            m = classification_metrics(preds, refs, spec.labels or (), label_match=label_match)
            matched = m.pop("matched")
            for i, label, ref in zip(idx, matched, refs, strict=True):
                per_sample[i] = {"matched_label": label, "score": float(label is not None and
                                                                       normalize_text(label) == normalize_text(ref))}
            results[name] = {"kind": spec.kind, "n": m["n"], "score": m["accuracy"]} | m
        elif spec.kind == "generate":
            scores = rouge_l(preds, refs)
            for i, s in zip(idx, scores, strict=True):
                per_sample[i] = {"score": float(s)}
            results[name] = {"kind": spec.kind, "n": len(idx), "score": float(scores.mean()),
                             "rouge_l": float(scores.mean())}
        else:
            raise ValueError(f"task {name!r}: unknown kind {spec.kind!r}; expected one of {TASK_KINDS}")
    macro = float(np.mean([m["score"] for m in results.values()]))
    return EvalReport(tasks=results, macro_average=macro, per_sample=per_sample)


@dataclass
class EvalResult:
    """The report and, in input order, one record per sample: index, task, input, target,
    prediction, score (and matched_label for classify/nli)."""

    report: EvalReport
    records: list[dict]


def constant_answers(result: EvalResult, min_examples: int = 10) -> list[tuple[str, str, int]]:
    """The classify/nli tasks on which a model gave one and the same label to every example although
    the targets hold at least two labels: [(task, label, number of examples)], in first-seen task
    order. Such a task's accuracy is the share of that label among the targets, whatever the inputs
    (a collapsed classifier; e.g. BBC ``match`` at a learning rate of 6e-3,
    docs/results/bbc/match-diagnostic). Tasks with fewer than `min_examples` examples are skipped.
    """
    seen: dict[str, tuple[set, set, int]] = {}
    for rec in result.records:
        if "matched_label" not in rec:
            continue
        answers, targets, n = seen.get(rec["task"], (set(), set(), 0))
        answers.add(rec["matched_label"])
        targets.add(normalize_text(str(rec["target"])))
        seen[rec["task"]] = (answers, targets, n + 1)
    return [(task, next(iter(answers)), n) for task, (answers, targets, n) in seen.items()
            if n >= min_examples and len(targets) > 1 and len(answers) == 1 and None not in answers]


def paired_bootstrap(
    first: EvalResult,
    other: EvalResult,
    *,
    n_resamples: int = 5000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Paired bootstrap of the score difference first − other, per task and for the macro average.

    Both results must score the same samples (same indices and tasks, in the same order). Each of the
    ``n_resamples`` draws resamples the samples of every task with replacement (stratified by task,
    the same draw for both sources: paired), giving Δ_t = mean_a − mean_b per task and the macro
    Δ = mean over tasks of Δ_t; the interval is the percentile interval of those draws (Efron &
    Tibshirani 1993, ch. 13). Seeded: the same inputs give the same interval.

    Returns one dict per task (first-seen order) and a last one for ``macro_average``: task,
    difference (on the full sample), ci_low, ci_high.

    Raises:
        ValueError: the results score different samples, or n_resamples < 1, or confidence not in (0, 1).
    """
    if n_resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}")
    key_a = [(r["index"], r["task"]) for r in first.records]
    if key_a != [(r["index"], r["task"]) for r in other.records]:
        raise ValueError("paired bootstrap: the two results score different samples")
    tasks = list(dict.fromkeys(r["task"] for r in first.records))
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    rows, draws = [], []
    for task in tasks:
        rows_t = [i for i, r in enumerate(first.records) if r["task"] == task]
        diff = np.array([first.records[i]["score"] - other.records[i]["score"] for i in rows_t], dtype=np.float64)
        boot = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
        draws.append(boot)
        rows.append({"task": task, "difference": float(diff.mean()),
                     "ci_low": float(np.quantile(boot, alpha)), "ci_high": float(np.quantile(boot, 1 - alpha))})
    macro = np.mean(draws, axis=0)
    rows.append({"task": "macro_average", "difference": float(np.mean([r["difference"] for r in rows])),
                 "ci_low": float(np.quantile(macro, alpha)), "ci_high": float(np.quantile(macro, 1 - alpha))})
    return rows
