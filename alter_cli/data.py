"""Multi-task JSON Lines data: task registry, parsing, prompt formatting, collation, task-balanced sampling.

Format (pCLUE's schema, spec section 2): one JSON object per line with `input`, `target` and `type`
(the task name); field names configurable. Pure functions: callers read the files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from .readers import ReadError, jsonl_lines, load_json

TASK_KINDS = ("classify", "nli", "generate")
IGNORE_INDEX = -100


class DataError(ValueError):
    """Malformed data (message names file and line)."""


class UnknownTaskError(ValueError):
    """A task name that is not in the registry."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: name, kind (classify | nli | generate) and, for classify/nli, its label list."""

    name: str
    kind: str
    labels: tuple[str, ...] | None = None


class TaskRegistry:
    """Ordered task names -> ids 0..T-1 (mapped once; the forward pass sees only ids)."""

    def __init__(self, tasks: Sequence[TaskSpec]):
        self.tasks = list(tasks)
        self._ids = {t.name: i for i, t in enumerate(self.tasks)}
        if len(self._ids) != len(self.tasks):
            raise ValueError("task names must be unique")
        for t in self.tasks:
            if t.kind not in TASK_KINDS:
                raise ValueError(f"task {t.name!r}: unknown kind {t.kind!r} (one of {', '.join(TASK_KINDS)})")

    @classmethod
    def from_config(cls, tasks: Sequence[Any]) -> TaskRegistry:
        """From config.TaskConfig objects (name, kind, labels)."""
        return cls([TaskSpec(t.name, t.kind, tuple(t.labels) if t.labels else None) for t in tasks])

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskRegistry) and self.to_dict() == other.to_dict()

    def id(self, name: str) -> int:
        """Task id of `name`; UnknownTaskError if not registered."""
        try:
            return self._ids[name]
        except KeyError:
            raise UnknownTaskError(f"unknown task {name!r} (known: {', '.join(self.names)})") from None

    def spec(self, name_or_id: str | int) -> TaskSpec:
        return self.tasks[name_or_id if isinstance(name_or_id, int) else self.id(name_or_id)]

    def ids(self, names: Sequence[str]) -> torch.Tensor:
        """LongTensor (B,) of task ids."""
        return torch.tensor([self.id(n) for n in names], dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": [{"name": t.name, "kind": t.kind, "labels": list(t.labels) if t.labels else None}
                          for t in self.tasks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskRegistry:
        try:
            return cls([TaskSpec(t["name"], t["kind"], tuple(t["labels"]) if t.get("labels") else None)
                        for t in d["tasks"]])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed task registry ({exc.__class__.__name__}: {exc})") from None


@dataclass(frozen=True)
class Example:
    """One multi-task sample."""

    input: str
    target: str
    task: str


def json_object_line(line: str, where: str, hint: str = "") -> dict:
    """One JSON Lines line as a dict; DataError `where: malformed JSON (...)` (+ hint) or
    `where: expected a JSON object, got <type>`."""
    try:
        obj = load_json(line)
    except ReadError as exc:
        raise DataError(f"{where}: {exc}{hint}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_jsonl(
    text: str, source: str, registry: TaskRegistry, fields: Any = None, check_labels: bool = True
) -> list[Example]:
    """Parse JSON Lines `text` (file name `source`, for messages) into Examples.

    fields: object with attributes input/target/type (config.FieldsConfig) or None for the defaults.
    Raises DataError / UnknownTaskError with `source:line:` for a malformed line, a missing or
    non-string field, an unknown task, or (check_labels) a classify/nli target outside its labels.
    """
    f_in, f_tg, f_ty = (fields.input, fields.target, fields.type) if fields is not None else ("input", "target", "type")
    out = []
    for lineno, line in jsonl_lines(text):
        obj = json_object_line(line, f"{source}:{lineno}")
        vals = []
        for key in (f_in, f_tg, f_ty):
            if key not in obj:
                raise DataError(f"{source}:{lineno}: missing field {key!r}")
            if not isinstance(obj[key], str):
                raise DataError(f"{source}:{lineno}: field {key!r} must be a string")
            vals.append(obj[key])
        try:
            spec = registry.spec(vals[2])
        except UnknownTaskError as exc:
            raise UnknownTaskError(f"{source}:{lineno}: {exc}") from None
        if check_labels and spec.labels and vals[1] not in spec.labels:
            raise DataError(f"{source}:{lineno}: target {vals[1]!r} is not a label of task {spec.name!r}")
        out.append(Example(vals[0], vals[1], vals[2]))
    if not out:
        raise DataError(f"{source}: no examples")
    return out


def use_chat_template(tokenizer: Any, prompt_format: str = "auto") -> bool:
    """Whether prompts go through the tokenizer's chat template (auto: when it has one).
    DataError for "chat" with a tokenizer that has no chat template."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has:
        raise DataError("data.prompt_format 'chat' but the model's tokenizer has no chat template (use auto or plain)")
    return prompt_format == "chat" or (prompt_format == "auto" and has)


TRUNCATION_MARGIN = 16  # tokens kept beyond the cut, so the cut never changes the tokens that are kept


def text_window(tokenizer: Any, text: str, n_tokens: int, keep: str = "end") -> str:
    """The end (keep="end") or start (keep="start") of `text`, cut at a character so that it still
    tokenises to at least n_tokens + TRUNCATION_MARGIN tokens (or the whole text when it is shorter):
    truncating the window's token ids to n_tokens gives the same ids as truncating the whole text's,
    while the tokenizer only ever sees O(n_tokens) characters (a 50 MB line costs no more than a
    short one). The window starts at 8 characters per token and doubles while too short."""
    need = n_tokens + TRUNCATION_MARGIN
    chars = 8 * need
    while chars < len(text):
        window = text[-chars:] if keep == "end" else text[:chars]
        if len(tokenizer(window, add_special_tokens=False).input_ids) >= need:
            return window
        chars *= 2
    return text


def prompt_ids(tokenizer: Any, text: str, is_seq2seq: bool, prompt_format: str = "auto",
               max_tokens: int | None = None) -> list[int]:
    """Token ids of the prompt for `text`: the encoder input (seq2seq), the chat-template user turn
    with the generation prompt (instruct causal LMs), or `text + "\\n"` (plain causal LMs).

    max_tokens: the caller keeps only the last (causal) / first (seq2seq) max_tokens ids; the text is
    cut first (`text_window`), so a huge input is never tokenised in full.
    DataError for prompt_format "chat" with a T5 model or a tokenizer without a chat template."""
    if max_tokens is not None:
        text = text_window(tokenizer, text, max_tokens, keep="start" if is_seq2seq else "end")
    if is_seq2seq:
        if prompt_format == "chat":
            raise DataError("data.prompt_format 'chat' does not apply to an encoder-decoder (T5) model (use auto or plain)")
        return list(tokenizer(text).input_ids)
    if use_chat_template(tokenizer, prompt_format):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(rendered, add_special_tokens=False).input_ids)
    return list(tokenizer(text + "\n").input_ids)


def encode_example(
    tokenizer: Any, ex: Example, task_id: int, is_seq2seq: bool, prompt_format: str = "auto",
    max_length: int = 512, max_target_length: int = 128,
) -> dict[str, Any]:
    """Token ids with the loss on target tokens only.

    causal: input_ids = prompt + target + eos, labels = -100 over the prompt (target + eos at most
    min(max_target_length, max_length - 1) tokens, prompt truncated from the left to fit max_length,
    so a sequence never exceeds max_length); seq2seq: input_ids = encoder input (first max_length
    tokens), labels = target + eos (at most max_target_length). Texts are cut before tokenising
    (`text_window`).
    """
    eos = tokenizer.eos_token_id
    n_target = (max_target_length if is_seq2seq else max(1, min(max_target_length, max_length - 1))) - 1
    target_text = text_window(tokenizer, ex.target, n_target, keep="start")
    target = list(tokenizer(target_text, add_special_tokens=False).input_ids)[:n_target] + [eos]
    prompt = prompt_ids(tokenizer, ex.input, is_seq2seq, prompt_format, max_length)
    if is_seq2seq:
        return {"input_ids": prompt[:max_length], "labels": target, "task_id": task_id}
    keep = max(1, max_length - len(target))
    prompt = prompt[-keep:]
    return {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target, "task_id": task_id}


class EncodedDataset(Dataset):
    """A list of encoded examples (dicts from `encode_example`)."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    @property
    def task_ids(self) -> list[int]:
        return [it["task_id"] for it in self.items]


def encode_dataset(tokenizer: Any, examples: Sequence[Example], registry: TaskRegistry, is_seq2seq: bool,
                   prompt_format: str = "auto", max_length: int = 512, max_target_length: int = 128) -> EncodedDataset:
    """Encode all examples (task names mapped to ids once, here)."""
    return EncodedDataset([
        encode_example(tokenizer, ex, registry.id(ex.task), is_seq2seq, prompt_format, max_length, max_target_length)
        for ex in examples
    ])


@dataclass
class Collator:
    """Pads a list of encoded examples into a batch dict: input_ids, attention_mask, labels (-100 pad),
    task_ids (B,). padding_side "right" for training, "left" for batched generation."""

    pad_token_id: int
    padding_side: str = "right"
    keys: tuple[str, ...] = field(default=("input_ids", "labels"))

    def _pad(self, seqs: list[list[int]], value: int) -> torch.Tensor:
        n = max(len(s) for s in seqs)
        rows = [([value] * (n - len(s)) + s) if self.padding_side == "left" else (s + [value] * (n - len(s)))
                for s in seqs]
        return torch.tensor(rows, dtype=torch.long)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [it["input_ids"] for it in items]
        batch = {
            "input_ids": self._pad(ids, self.pad_token_id),
            "attention_mask": self._pad([[1] * len(s) for s in ids], 0),
            "task_ids": torch.tensor([it["task_id"] for it in items], dtype=torch.long),
        }
        if all("labels" in it for it in items):
            batch["labels"] = self._pad([it["labels"] for it in items], IGNORE_INDEX)
        return batch


def task_probabilities(task_ids: Sequence[int], num_tasks: int, temperature: float) -> torch.Tensor:
    """p_t ∝ n_t^(1/T) over tasks present in the data (temperature-scaled sampling, Arivazhagan et
    al. 2019, arXiv:1907.05019); shape (num_tasks,), zero for absent tasks."""
    counts = torch.bincount(torch.tensor(list(task_ids), dtype=torch.long), minlength=num_tasks).double()
    # In log space, relative to the largest task: (log n_t - log n_max) / T <= 0, so no overflow for any
    # T > 0 (T -> 0 gives the largest task(s) only, T -> inf uniform over the present tasks).
    log_n = torch.where(counts > 0, counts.log(), torch.full_like(counts, -torch.inf))
    scaled = torch.where(counts > 0, (log_n - log_n.max()) / temperature, log_n)
    return torch.softmax(scaled, dim=0)


class TaskBalancedSampler(Sampler[int]):
    """A fixed, seeded sequence of `num_samples` dataset indices: the task of each draw is sampled
    from `task_probabilities`, the example within the task walks through reshuffled passes of it.

    The whole sequence is fixed by the seed, so a resumed run (skipping the batches already seen)
    sees exactly the same samples as an uninterrupted one.
    """

    def __init__(self, task_ids: Sequence[int], num_samples: int, temperature: float = 2.0, seed: int = 0):
        self.num_samples = int(num_samples)
        tids = torch.tensor(list(task_ids), dtype=torch.long)
        num_tasks = int(tids.max()) + 1
        g = torch.Generator().manual_seed(seed)
        p = task_probabilities(tids.tolist(), num_tasks, temperature)
        draws = torch.multinomial(p.float(), self.num_samples, replacement=True, generator=g)
        order = torch.empty(self.num_samples, dtype=torch.long)
        for t in range(num_tasks):  # loop over tasks at set-up only
            where = (draws == t).nonzero().flatten()
            members = (tids == t).nonzero().flatten()
            if len(where) == 0:
                continue
            passes = -(-len(where) // len(members))
            perm = torch.cat([members[torch.randperm(len(members), generator=g)] for _ in range(passes)])
            order[where] = perm[: len(where)]
        self.order = order  # int64 tensor (8 bytes a sample; a Python list would take ~36)

    def __iter__(self) -> Iterator[int]:
        for chunk in self.order.split(1 << 16):
            yield from chunk.tolist()

    def __len__(self) -> int:
        return self.num_samples
