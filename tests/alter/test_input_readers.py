"""Hostile input to alter's readers (issue 15 items 6, 12, 13, 14): YAML 1.2 core, size limits with
their reason, JSON depth/integer limits, JSONL split on "\\n" only, text cut before tokenising."""

import json

import pytest
import torch
import yaml

from alter_cli.config import (
    MAX_SAMPLES,
    AlterConfig,
    ConfigError,
    EvalConfig,
    Stage2Config,
    dump_config,
    parse_set,
    resolve_config,
)
from alter_cli.data import (
    DataError,
    Example,
    TaskBalancedSampler,
    TaskRegistry,
    TaskSpec,
    encode_example,
    parse_jsonl,
    prompt_ids,
    task_probabilities,
    text_window,
)
from alter_cli.evaluate import parse_prediction_inputs
from alter_cli.generation import encode_prompts
from alter_cli.readers import MAX_DEPTH, ReadError, dump_yaml, load_json, load_yaml

from .conftest import make_tokenizer

TASKS = "tasks: [{name: copy, kind: generate}]\n"
REG = TaskRegistry([TaskSpec("copy", "generate"), TaskSpec("cls", "classify", ("pos", "neg"))])


def cfg(text: str, cls=AlterConfig, overrides=()):
    return resolve_config(TASKS + text if cls is AlterConfig else text, "c.yaml", list(overrides), cls)


# ------------------------------------------------------------------------------------- item 6: YAML 1.2
def test_yaml_1_1_forms_are_strings_in_yaml_1_2_core():
    assert cfg("train: {mixed_precision: no}\n").train.mixed_precision == "no"
    assert cfg("", overrides=["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load_yaml("a: [yes, no, on, off, y, n]") == {"a": ["yes", "no", "on", "off", "y", "n"]}
    assert load_yaml("a: 1:30\nb: 010\nc: 0o10\nd: 0x1F\ne: 1_000\nf: 2024-01-01") == {
        "a": "1:30", "b": 10, "c": 8, "d": 31, "e": "1_000", "f": "2024-01-01"}
    assert load_yaml("a: [true, False, TRUE, ~, null, 1e3, .5, -.inf]") == {
        "a": [True, False, True, None, None, 1000.0, 0.5, float("-inf")]}
    with pytest.raises(ConfigError, match=r"train.warmup_steps: .*integer"):
        cfg("train: {warmup_steps: 1:30}\n")  # YAML 1.1 would read 90


@pytest.mark.parametrize("text,where", [
    ("mta: {layers: [true, 1]}\n", "mta.layers"),
    ("mta: {task_to_experts: {copy: [0, false]}}\n", "mta.task_to_experts"),
    ("train: {batch_size: true}\n", "train.batch_size"),
    ("mta: {temperature: false}\n", "mta.temperature"),
])
def test_booleans_are_not_numbers_even_inside_lists(text, where):
    with pytest.raises(ConfigError, match=rf"{where}.*expected a number, got (true|false)"):
        cfg(text)


@pytest.mark.parametrize("text,problem", [
    ("a: &x 1\nb: *x\n", "aliases"),
    ("a: !!binary aGk=\n", "not allowed"),
    ("a: !!python/object:os.system x\n", "not allowed"),
    ("a: !!int x\n", "not an integer"),
    ("a: " + "9" * 4301 + "\n", "more than 4300"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", f"more than {MAX_DEPTH} levels"),
    ("a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)), f"more than {MAX_DEPTH} levels"),
])
def test_hostile_yaml_is_one_read_error(text, problem):
    with pytest.raises(ReadError, match=problem):
        load_yaml(text)
    with pytest.raises(ConfigError, match=problem) as err:
        resolve_config(text, "c.yaml", [], AlterConfig)
    assert "\n" not in str(err.value)


def test_dumped_config_reads_back_the_same_with_yaml_1_1_and_1_2():
    data = {"labels": ["1e3", "0o7", "no", "1:30", "null", "x"], "n": 3, "f": 0.5}
    text = dump_yaml(data)
    assert load_yaml(text) == data == yaml.safe_load(text)
    c = cfg("tasks: [{name: '0o7', kind: classify, labels: ['1e3', 'no']}]\n")
    assert resolve_config(dump_config(c), "r.yaml", [], AlterConfig) == c


# -------------------------------------------------------------------------------- item 12: size limits
@pytest.mark.parametrize("override,needles", [
    ("train.batch_size=1e12", ["train.batch_size", "more than 65536", "does not fit in memory"]),
    ("train.max_steps=1e30", ["train.max_steps", f"more than {MAX_SAMPLES}", "index per sample"]),
    ("train.max_steps=" + "9" * 4000, ["train.max_steps", "(4000 digits)"]),
    ("train.max_steps=10000000", ["max_steps × gradient_accumulation_steps × batch_size", "samples"]),
    ("train.warmup_steps=1e20", ["train.warmup_steps", "more than"]),
    ("mta.num_experts=1e6", ["mta.num_experts", "more than 256", "full adapter"]),
    ("mta.rank=1e6", ["mta.rank", "more than 65536"]),
    ("mta.gate_hidden=1e6", ["mta.gate_hidden", "more than 65536"]),
    ("mta.layers=[100000]", ["mta.layers", "block index"]),
    ("mta.temperature=1e-300", ["mta.temperature", "greater than or equal to"]),
    ("mta.own_init=1e300", ["mta.own_init", "saturates the softmax"]),
    ("mta.gate_init_bias=.inf", ["mta.gate_init_bias", "finite"]),
    ("mta.own_init=.nan", ["mta.own_init", "finite"]),
    ("train.seed=-1", ["train.seed", "greater than or equal to 0"]),
    ("train.seed=4294967296", ["train.seed", "less than or equal to 4294967295"]),
    ("data.max_length=1e9", ["data.max_length", "tokens per sequence"]),
    ("train.batch_size=8192", ["train.batch_size × data.max_length", "tokens per micro-batch"]),
    ("generation.num_beams=1000", ["generation.num_beams", "another row"]),
    ("generation.max_new_tokens=1e12", ["generation.max_new_tokens", "tokens per sequence"]),
    ("lora.rank=1e6", ["lora.rank", "more than 65536"]),
    ("data.sampling_temperature=.nan", ["data.sampling_temperature"]),
])
def test_sizes_are_bounded_with_the_reason_in_one_line(override, needles):
    with pytest.raises(ConfigError) as err:
        cfg("", overrides=[override])
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    for n in needles:
        assert n in msg, msg


def test_limits_apply_to_stage2_and_eval_configs():
    with pytest.raises(ConfigError, match="mta.num_shared_experts"):
        resolve_config("stage1: x\nmta: {num_shared_experts: 1e6}\n", "s2.yaml", [], Stage2Config)
    with pytest.raises(ConfigError, match="generation.batch_size"):
        resolve_config("generation: {batch_size: 1e12}\n", "e.yaml", [], EvalConfig)
    assert parse_set(["a.b=no"]) == {"a": {"b": "no"}}


def test_duplicate_tasks_and_task_only_token_options_are_refused_in_every_config():
    two = "tasks: [{name: a, kind: generate}, {name: a, kind: generate}]\n"
    for text, cls in ((two, AlterConfig), (two, EvalConfig)):
        with pytest.raises(ConfigError, match="task name 'a' declared twice"):
            resolve_config(text, "c.yaml", [], cls)
    # the gate fields (and their checks) are one definition shared by the stage-1 and stage-2 configs
    for text, cls in ((TASKS, AlterConfig), ("stage1: x\n", Stage2Config)):
        for bad in ("mta.gate_input=hidden", "mta.gate_logit_cap=2.0"):
            with pytest.raises(ConfigError, match="mta.gate_task: task_only has none"):
                resolve_config(text, "c.yaml", ["mta.gate_task=task_only", bad], cls)
    from alter_cli.stage2 import STAGE2_MTA_FIELDS
    s2 = resolve_config("stage1: x\n", "s2.yaml", [], Stage2Config).mta
    assert (s2.num_shared_experts, s2.gate_task) == (2, "bias")  # stage 2's own defaults ...
    s1 = cfg("").mta
    assert (s1.num_shared_experts, s1.gate_task) == (0, "none")  # ... a stage-1 config has no shared experts
    assert set(STAGE2_MTA_FIELDS) < set(type(s2).model_fields) and set(STAGE2_MTA_FIELDS) < set(type(s1).model_fields)


def test_sampling_temperature_extremes_are_limits_not_nan():
    ids = [0, 0, 0, 1, 2, 2, 2]
    tiny = task_probabilities(ids, 4, 1e-300)
    assert torch.equal(tiny, torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=torch.float64))  # the largest tasks
    huge = task_probabilities(ids, 4, 1e300)
    assert torch.allclose(huge, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0], dtype=torch.float64))
    p2 = task_probabilities(ids, 4, 2.0)  # n_t^(1/2) normalised
    expected = torch.tensor([3**0.5, 1.0, 3**0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(p2, expected / expected.sum())
    assert len(TaskBalancedSampler(ids, 20, temperature=1e-300, seed=0)) == 20


# ------------------------------------------------------------------------------------------------ JSON
def test_json_depth_and_integer_size_are_read_errors():
    with pytest.raises(ReadError, match="nested too deeply"):
        load_json("[" * 5000 + "]" * 5000)
    with pytest.raises(ReadError, match="more than 4300"):
        load_json('{"a": ' + "9" * 5000 + "}")
    with pytest.raises(ReadError, match="NaN is not JSON"):
        load_json('{"a": NaN}')
    text = '{"input": ' + "[" * 5000 + "]" * 5000 + ', "target": "x", "type": "copy"}\n'
    with pytest.raises(DataError, match=r"d.jsonl:1: malformed JSON \(nested too deeply\)"):
        parse_jsonl(text, "d.jsonl", REG)
    with pytest.raises(DataError, match="p.jsonl:1: malformed JSON.*more than 4300"):
        parse_prediction_inputs('{"input": "x", "type": "copy", "n": ' + "1" * 4400 + "}", "p.jsonl", REG)


# ------------------------------------------------------------------------------- item 13: "\n" only
@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085", "\x0c", "\x1d"])
def test_jsonl_line_separators_inside_strings_are_data(sep):
    line = json.dumps({"input": f"a{sep}b", "target": f"c{sep}d", "type": "copy"}, ensure_ascii=False)
    text = line + "\r\n" + line + "\n\n"
    examples = parse_jsonl(text, "d.jsonl", REG)
    assert examples == [Example(f"a{sep}b", f"c{sep}d", "copy")] * 2
    rows = parse_prediction_inputs(f"x{sep}y\nz\n", "<stdin>", REG, task="copy")
    assert [r["input"] for r in rows] == [f"x{sep}y", "z"]
    rows = parse_prediction_inputs(line + "\n", "<stdin>", REG)
    assert len(rows) == 1 and rows[0]["input"] == f"a{sep}b"


def test_jsonl_line_numbers_count_newlines_only():
    good = json.dumps({"input": "a\u2028b", "target": "t", "type": "copy"}, ensure_ascii=False)
    with pytest.raises(DataError, match="d.jsonl:3:"):
        parse_jsonl(good + "\n\n{bad\n", "d.jsonl", REG)


# ------------------------------------------------------------------- item 14: cut text before tokenising
class SpyTokenizer:
    """Wraps a tokenizer and records the longest text it was asked to tokenise."""

    def __init__(self, inner):
        self.inner, self.longest = inner, 0

    def __call__(self, text, **kw):
        self.longest = max(self.longest, len(text))
        return self.inner(text, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply_chat_template(self, *a, **kw):
        return self.inner.apply_chat_template(*a, **kw)


@pytest.mark.parametrize("is_seq2seq,prompt_format", [(False, "chat"), (False, "plain"), (True, "auto")])
def test_a_megabyte_input_is_cut_before_the_tokenizer_sees_it(is_seq2seq, prompt_format):
    inner = make_tokenizer("seq2seq" if is_seq2seq else "causal")
    text = "".join(chr(ord("a") + (i * 7) % 26) + (" " if i % 5 == 0 else "") for i in range(20_000))
    huge = text * 50  # 1.2 MB
    spy = SpyTokenizer(inner)
    ids = encode_prompts(spy, [huge], is_seq2seq, prompt_format, max_length=64)[0]
    assert spy.longest < 2_000, spy.longest  # the tokenizer saw a bounded window, not 1.2 MB
    full = prompt_ids(inner, text, is_seq2seq, prompt_format)
    assert encode_prompts(inner, [text], is_seq2seq, prompt_format, 64)[0] == (full[:64] if is_seq2seq else full[-64:])
    assert ids == encode_prompts(inner, [text[-20_000:] if not is_seq2seq else huge[:20_000]], is_seq2seq,
                                 prompt_format, 64)[0]  # same ids as tokenising a long stretch of the end/start
    spy = SpyTokenizer(inner)
    enc = encode_example(spy, Example(huge, huge, "copy"), 0, is_seq2seq, prompt_format, max_length=48,
                         max_target_length=12)
    assert spy.longest < 2_000, spy.longest
    assert sum(x != -100 for x in enc["labels"]) == 12 and len(enc["input_ids"]) == 48
    assert enc["labels"][-12:-1] == list(inner(huge[:11], add_special_tokens=False).input_ids)


def test_text_window_is_exact_and_grows_for_long_tokens():
    tok = make_tokenizer()
    assert text_window(tok, "short", 100) == "short"
    long = "ab " * 10_000
    assert text_window(tok, long, 10, keep="start") == long[:8 * 26]
    assert text_window(tok, long, 10, keep="end") == long[-8 * 26:]


def test_target_never_pushes_a_sequence_past_max_length():
    tok = make_tokenizer()
    enc = encode_example(tok, Example("prompt", "t" * 500, "copy"), 0, False, "plain", max_length=16,
                         max_target_length=128)
    assert len(enc["input_ids"]) == 16 and enc["labels"][0] == -100
