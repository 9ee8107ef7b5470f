"""Task registry, JSONL parsing, prompt formatting with loss masks, collation, task-balanced sampling."""

import json

import pytest
import torch

from alter_cli.data import (
    IGNORE_INDEX,
    Collator,
    DataError,
    Example,
    TaskBalancedSampler,
    TaskRegistry,
    TaskSpec,
    UnknownTaskError,
    encode_example,
    parse_jsonl,
    task_probabilities,
)

from .conftest import make_tokenizer

REG = TaskRegistry([TaskSpec("gen", "generate"), TaskSpec("cls", "classify", ("pos", "neg"))])


def test_registry_round_trip_and_unknown_names():
    again = TaskRegistry.from_dict(json.loads(json.dumps(REG.to_dict())))
    assert again == REG and again.names == ["gen", "cls"] and again.id("cls") == 1
    assert again.spec("cls").labels == ("pos", "neg")
    assert torch.equal(REG.ids(["cls", "gen", "cls"]), torch.tensor([1, 0, 1]))
    with pytest.raises(UnknownTaskError, match="'nope'.*known: gen, cls"):
        REG.id("nope")
    assert issubclass(UnknownTaskError, ValueError)


def test_parse_jsonl_reports_line_numbers():
    good = '{"input": "a", "target": "b", "type": "gen"}\n\n{"input": "c", "target": "pos", "type": "cls"}\n'
    assert parse_jsonl(good, "f.jsonl", REG) == [Example("a", "b", "gen"), Example("c", "pos", "cls")]
    cases = {
        good + "{oops\n": "f.jsonl:4: malformed JSON",
        good + '{"input": "a", "type": "gen"}\n': "f.jsonl:4: missing field 'target'",
        good + '{"input": 1, "target": "b", "type": "gen"}\n': "f.jsonl:4: field 'input' must be a string",
        good + '{"input": "a", "target": "maybe", "type": "cls"}\n': "f.jsonl:4: target 'maybe' is not a label",
        "[1]\n": "f.jsonl:1: expected a JSON object",
        "\n": "no examples",
    }
    for text, msg in cases.items():
        with pytest.raises(DataError, match=msg):
            parse_jsonl(text, "f.jsonl", REG)
    with pytest.raises(UnknownTaskError, match="f.jsonl:2: unknown task 'x'"):
        parse_jsonl(good.splitlines()[0] + '\n{"input": "a", "target": "b", "type": "x"}\n', "f.jsonl", REG)


def test_custom_field_names():
    class F:
        input, target, type = "q", "a", "task"

    assert parse_jsonl('{"q": "x", "a": "y", "task": "gen"}', "f", REG, F()) == [Example("x", "y", "gen")]


def test_causal_chat_prompt_loss_on_target_only():
    tok = make_tokenizer("causal")
    enc = encode_example(tok, Example("ab", "cd", "gen"), 0, is_seq2seq=False)
    prompt = tok.apply_chat_template([{"role": "user", "content": "ab"}], tokenize=False, add_generation_prompt=True)
    n = len(tok(prompt, add_special_tokens=False).input_ids)
    assert tok.decode(enc["input_ids"][:n]) == prompt
    assert enc["labels"][:n] == [IGNORE_INDEX] * n
    assert tok.decode(enc["labels"][n:]) == "cd<|im_end|>"
    plain = encode_example(tok, Example("ab", "cd", "gen"), 0, is_seq2seq=False, prompt_format="plain")
    assert tok.decode(plain["input_ids"]) == "ab\ncd<|im_end|>"
    short = encode_example(tok, Example("x" * 100, "cd", "gen"), 0, is_seq2seq=False, max_length=20)
    assert len(short["input_ids"]) == 20 and tok.decode(short["labels"][-3:]) == "cd<|im_end|>"


def test_seq2seq_encoding_and_collation():
    tok = make_tokenizer("seq2seq")
    items = [encode_example(tok, Example("abc", "de", "gen"), 0, True),
             encode_example(tok, Example("a", "pos", "cls"), 1, True)]
    assert tok.decode(items[0]["input_ids"]) == "abc</s>" and tok.decode(items[1]["labels"]) == "pos</s>"
    batch = Collator(tok.pad_token_id)(items)
    assert batch["input_ids"].tolist()[1] == items[1]["input_ids"] + [0, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist()[0] == items[0]["labels"] + [IGNORE_INDEX]
    assert batch["task_ids"].tolist() == [0, 1]
    left = Collator(tok.pad_token_id, padding_side="left")(items)
    assert left["attention_mask"].tolist()[1] == [0, 0, 1, 1]


def test_task_balanced_sampler_temperature_and_determinism():
    tids = [0] * 90 + [1] * 10
    p1 = task_probabilities(tids, 2, 1.0)
    torch.testing.assert_close(p1, torch.tensor([0.9, 0.1], dtype=torch.float64))
    p2 = task_probabilities(tids, 2, 2.0)
    torch.testing.assert_close(p2, torch.tensor([3 / 4, 1 / 4], dtype=torch.float64))  # sqrt(90):sqrt(10) = 3:1
    s = TaskBalancedSampler(tids, 4000, temperature=2.0, seed=1)
    order = list(s)
    frac = sum(tids[i] == 1 for i in order) / len(order)
    assert abs(frac - 0.25) < 0.03
    assert order == list(TaskBalancedSampler(tids, 4000, temperature=2.0, seed=1))
    assert order != list(TaskBalancedSampler(tids, 4000, temperature=2.0, seed=2))
    small = [i for i in order if tids[i] == 1][:10]
    assert sorted(small) == list(range(90, 100))  # within a task, a pass covers every example once
