"""alter evaluate: metrics on hand-made predictions, batched generation against one-at-a-time."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest

from alter_cli import generation, metrics
from alter_cli.data import TaskSpec

from .conftest import make_model, make_tokenizer

# ----------------------------------------------------------------------------------------- metrics


def test_normalize_and_match_label():
    assert metrics.normalize_text("  Sport!\n") == "sport"
    assert metrics.normalize_text("ＳＰＯＲＴ") == "sport"  # full-width forms (NFKC)
    assert metrics.normalize_text("蕴含。") == "蕴含"
    labels = ["sport", "tech", "not entailment", "entailment"]
    assert metrics.match_label("Sport.", labels) == "sport"
    assert metrics.match_label("sport. The match was ...", labels) == "sport"
    assert metrics.match_label("sports", labels) is None  # no word boundary after "sport"
    assert metrics.match_label("Not entailment!", labels) == "not entailment"
    assert metrics.match_label("sport. more", labels, mode="exact") is None
    assert metrics.match_label("The topic is sport.", labels) is None  # prefix mode: label not at the start
    assert metrics.match_label("体育新闻", ["体育", "财经"]) == "体育"  # CJK: no spaces between words
    assert metrics.match_label("", labels) is None


def test_match_label_search_mode():
    labels = ["sport", "tech", "not entailment", "entailment"]
    search = functools.partial(metrics.match_label, labels=labels, mode="search")
    assert search("The topic of this article is Sport.") == "sport"
    assert search("sport. more") == "sport"  # prefix still first
    assert search("It is about sports and more") is None  # "sports" is not the word "sport"
    assert search("Either sport or tech.") is None  # two labels named: ambiguous
    assert search("sport, sport and sport") == "sport"  # one distinct label, several times
    assert search("The answer: not entailment.") == "not entailment"  # not also "entailment"
    assert search("It is entailment or not entailment") is None
    assert search("no label here") is None
    assert metrics.match_label("这是体育新闻", ["体育", "财经"], mode="search") == "体育"
    with pytest.raises(ValueError, match="label match mode"):
        metrics.match_label("sport", labels, mode="fuzzy")
    # the metrics take the mode through
    m = metrics.classification_metrics(["It is sport.", "tech"], ["sport", "tech"], labels, label_match="search")
    assert m["accuracy"] == 1.0 and m["n_unmatched"] == 0
    m = metrics.classification_metrics(["It is sport.", "tech"], ["sport", "tech"], labels)
    assert m["accuracy"] == 0.5 and m["n_unmatched"] == 1


def test_classification_metrics_hand_computed():
    labels = ["a", "b", "c"]
    refs = ["a", "a", "b", "c"]
    preds = ["A", "b", "B!", "xyz"]  # xyz matches no label: wrong, reported
    m = metrics.classification_metrics(preds, refs, labels)
    # a: TP 1, FP 0, FN 1 -> F1 2/3; b: TP 1, FP 1, FN 0 -> 2/3; c: TP 0, FP 0, FN 1 -> 0.
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["n_unmatched"] == 1 and m["unmatched"] == ["xyz"]
    assert m["matched"] == ["a", "b", "b", None]


def test_macro_f1_ignores_labels_never_seen():
    # Label "c" appears neither in references nor predictions: not part of the average.
    m = metrics.classification_metrics(["a", "a", "b"], ["a", "b", "b"], ["a", "b", "c"])
    # a: TP1 FP1 FN0 -> 2/3; b: TP1 FP0 FN1 -> 2/3
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_classification_rejects_reference_outside_label_set():
    with pytest.raises(ValueError, match="not in the label set"):
        metrics.classification_metrics(["a"], ["zzz"], ["a", "b"])


def test_rouge_l_english_and_cjk_hand_computed():
    # LCS("the cat sat on the mat", "the cat on mat") = 4: P = 4/4, R = 4/6, F = 2PR/(P+R) = 0.8
    # CJK per character: LCS("今天天气很好", "今天很好") = 4 -> same 0.8; punctuation ignored.
    scores = metrics.rouge_l(
        ["The cat on mat.", "今天，很好。", "完全不同", ""],
        ["the cat sat on the mat", "今天天气很好", "今天天气很好", "anything"],
    )
    np.testing.assert_allclose(scores, [0.8, 0.8, 0.0, 0.0])
    # Mixed script: tokens "gpu", "很", "快" against "gpu", "快": P = 1, R = 2/3 -> F = 0.8
    np.testing.assert_allclose(metrics.rouge_l(["GPU 快"], ["GPU很快"]), [0.8])
    assert metrics.is_cjk("GPU很快") and not metrics.is_cjk("GPU fast")


def test_compute_metrics_macro_average():
    tasks = [
        TaskSpec("topic", "classify", ("sport", "tech")),
        TaskSpec("pair", "nli", ("yes", "no")),
        TaskSpec("headline", "generate"),
        TaskSpec("unused", "generate"),
    ]
    names = ["topic", "topic", "pair", "headline", "headline"]
    preds = ["Sport", "banana", "yes", "the cat on mat", "exact words"]
    refs = ["sport", "tech", "no", "the cat sat on the mat", "exact words"]
    report = metrics.compute_metrics(tasks, names, preds, refs)
    assert list(report.tasks) == ["topic", "pair", "headline"]
    assert report.tasks["topic"]["accuracy"] == pytest.approx(0.5)
    assert report.tasks["topic"]["n_unmatched"] == 1
    assert report.tasks["pair"]["score"] == 0.0
    assert report.tasks["headline"]["rouge_l"] == pytest.approx((0.8 + 1.0) / 2)
    assert report.macro_average == pytest.approx((0.5 + 0.0 + 0.9) / 3)
    assert [s["score"] for s in report.per_sample] == pytest.approx([1, 0, 0, 0.8, 1])
    assert report.rows()[-1]["task"] == "macro_average"
    with pytest.raises(ValueError, match="unknown task"):
        metrics.compute_metrics(tasks, ["nope"], ["x"], ["y"])


# -------------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def tiny_causal_lm():
    """The tiny random Llama-style model and character tokenizer of conftest (built in code)."""
    return make_model("llama", seed=0), make_tokenizer("causal")


def _noop_context(calls):
    @contextlib.contextmanager
    def ctx(model, task_ids):
        calls.append(task_ids.tolist())
        yield

    return ctx


def test_batched_generation_equals_one_at_a_time(tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    texts = ["hello world", "a", "the quick brown fox", "multi task", "xyz 123", "mta!"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    task_ids = [0, 1, 2, 0, 1, 2]
    calls: list = []
    batched = generation.generate_texts(model, tokenizer, prompts, task_ids, batch_size=4, max_new_tokens=8,
                                task_context=_noop_context(calls))
    # sorted by length: batches of 4 and 2, each task id travelling with its prompt
    assert sorted(sum(calls, [])) == sorted(task_ids) and [len(c) for c in calls] == [4, 2]
    assert calls[0] == [2, 0, 0, 1]  # the 4 longest: "the quick..", "hello world", "multi task", "xyz 123"
    single = [
        generation.generate_texts(model, tokenizer, [p], [t], batch_size=1, max_new_tokens=8,
                          task_context=_noop_context([]))[0]
        for p, t in zip(prompts, task_ids, strict=True)
    ]
    assert batched == single
    assert any(len(s) > 0 for s in single)  # the random model does generate something
    # only new tokens are decoded: the prompt is not echoed
    import torch

    with torch.inference_mode():
        full = model.generate(input_ids=torch.tensor([prompts[2]]), max_new_tokens=8, do_sample=False,
                              pad_token_id=0, eos_token_id=tokenizer.eos_token_id)
    assert tokenizer.decode(full[0, len(prompts[2]):], skip_special_tokens=True).strip() == batched[2]


def test_beam_search_batched_equals_single(tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    prompts = [tokenizer(t)["input_ids"] for t in ["abc", "hello there", "zz"]]
    kw = dict(max_new_tokens=6, num_beams=3, task_context=_noop_context([]))
    batched = generation.generate_texts(model, tokenizer, prompts, [0, 1, 2], batch_size=3, **kw)
    single = [generation.generate_texts(model, tokenizer, [p], [0], batch_size=1, **kw)[0] for p in prompts]
    assert batched == single


def test_generate_texts_rejects_bad_input(tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    with pytest.raises(ValueError, match="task ids"):
        generation.generate_texts(model, tokenizer, [[5, 6]], [0, 1], task_context=_noop_context([]))
    with pytest.raises(ValueError, match="empty prompt"):
        generation.generate_texts(model, tokenizer, [[]], [0], task_context=_noop_context([]))


def test_seq2seq_batched_generation_equals_one_at_a_time():
    model, tokenizer = make_model("t5", seed=1), make_tokenizer("seq2seq")
    prompts = [tokenizer(t)["input_ids"] for t in ["translate me", "hi", "a longer input text"]]
    kw = dict(max_new_tokens=6, task_context=_noop_context([]))
    batched = generation.generate_texts(model, tokenizer, prompts, [0, 1, 0], batch_size=3, **kw)
    single = [generation.generate_texts(model, tokenizer, [p], [0], batch_size=1, **kw)[0] for p in prompts]
    assert batched == single and any(single)


def _result(tasks, scores):
    records = [{"index": i, "task": t, "score": float(x)} for i, (t, x) in enumerate(zip(tasks, scores, strict=True))]
    return metrics.EvalResult(report=None, records=records)


def test_paired_bootstrap_exact_cases_and_normal_limit():
    tasks = ["a"] * 4 + ["b"] * 4
    same = _result(tasks, [1, 0, 1, 0, 0.5, 0.2, 0.9, 0.1])
    rows = metrics.paired_bootstrap(same, same, n_resamples=200)
    assert [r["task"] for r in rows] == ["a", "b", "macro_average"]
    assert all(r["difference"] == r["ci_low"] == r["ci_high"] == 0.0 for r in rows)  # identical systems
    ones, zeros = _result(tasks, [1] * 8), _result(tasks, [0, 0, 0, 0, 0.25, 0.25, 0.25, 0.25])
    rows = metrics.paired_bootstrap(ones, zeros, n_resamples=200)
    assert rows[0] == {"task": "a", "difference": 1.0, "ci_low": 1.0, "ci_high": 1.0}  # constant differences
    assert rows[1]["difference"] == rows[1]["ci_low"] == rows[1]["ci_high"] == pytest.approx(0.75)
    assert rows[2]["difference"] == pytest.approx(0.875)
    # large n: the percentile interval approaches mean ± 1.96 sd/√n of the paired differences
    rng = np.random.default_rng(1)
    n = 2000
    a, b = rng.random(n) < 0.7, rng.random(n) < 0.6
    rows = metrics.paired_bootstrap(_result(["t"] * n, a), _result(["t"] * n, b), n_resamples=4000, seed=3)
    d = a.astype(float) - b.astype(float)
    half = 1.959964 * d.std(ddof=1) / np.sqrt(n)
    assert rows[0]["difference"] == pytest.approx(d.mean())
    assert rows[0]["ci_high"] - rows[0]["ci_low"] == pytest.approx(2 * half, rel=0.08)
    assert metrics.paired_bootstrap(_result(["t"] * n, a), _result(["t"] * n, b), n_resamples=4000, seed=3) == rows
    with pytest.raises(ValueError, match="different samples"):
        metrics.paired_bootstrap(same, _result(tasks[::-1], [0] * 8))


def _records(task: str, pairs: list[tuple[str | None, str]]) -> list[dict]:
    return [{"index": i, "task": task, "input": f"x{i}", "target": t, "prediction": str(a), "matched_label": a,
             "score": float(a == t)} for i, (a, t) in enumerate(pairs)]


def test_constant_answers_flags_a_collapsed_classifier_only():
    report = metrics.EvalReport(tasks={}, macro_average=0.0, per_sample=[])
    collapsed = _records("match", [("no", "yes"), ("no", "no")] * 6)  # 12 examples, one answer, two targets
    mixed = _records("topic", [("a", "a"), ("b", "a")] * 6)
    one_target = _records("easy", [("a", "a")] * 12)  # every target the same label: one answer is right
    unmatched = _records("odd", [(None, "yes"), (None, "no")] * 6)  # no label matched: not an answer
    generated = [{"index": 0, "task": "headline", "input": "x", "target": "t", "prediction": "p", "score": 0.0}] * 12
    result = metrics.EvalResult(report, collapsed + mixed + one_target + unmatched + generated)
    assert metrics.constant_answers(result) == [("match", "no", 12)]
    assert metrics.constant_answers(metrics.EvalResult(report, collapsed[:9])) == []  # below min_examples
    assert metrics.constant_answers(metrics.EvalResult(report, collapsed[:9]), min_examples=9) == [("match", "no", 9)]
