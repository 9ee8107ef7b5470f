"""Evaluation of a data set (spec ``shared/spec/alter.md`` section 4): generate for every example (shared out
over the processes of an ``accelerate.Accelerator``) and score per task, and the inputs of ``alter predict``.
Pure core: nothing here reads or writes files, prints, or exits; the CLI layer does the I/O. Metrics are in
:mod:`alter_cli.metrics`, generation in :mod:`alter_cli.generation`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .generation import TaskContext, encode_prompts, generate_texts
from .metrics import EvalResult, compute_metrics


def evaluate_examples(
    model,
    tokenizer,
    registry,
    examples: Sequence,
    *,
    is_seq2seq: bool,
    prompt_format: str = "auto",
    max_length: int = 512,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    num_beams: int = 1,
    label_match: str = "prefix",
    accelerator=None,
    task_context: TaskContext | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Generate for every example and score the predictions per task.

    Examples (``data.Example``: input, target, task) are sorted by prompt length and cut into
    batches of ``batch_size``; with an ``accelerate.Accelerator`` the batches are shared out over the
    processes (``prepare_data_loader``) and the predictions collected with ``gather_for_metrics``
    (which drops the samples repeated to even out the last batches), so every process returns the
    same complete result. Without one, everything runs in this process.

    Raises:
        ValueError / data.UnknownTaskError: an example of a task outside ``registry``, a reference
        outside its label set, an empty example list; data.DataError: a prompt + max_new_tokens
        beyond the model's positions (`generate_texts`).
    """
    import torch
    from torch.utils.data import DataLoader

    if not examples:
        raise ValueError("no examples to evaluate")
    task_ids = [registry.id(ex.task) for ex in examples]
    prompts = encode_prompts(tokenizer, [ex.input for ex in examples], is_seq2seq, prompt_format, max_length)
    order = [int(i) for i in np.argsort([-len(p) for p in prompts], kind="stable")]
    loader = DataLoader(torch.tensor(order), batch_size=batch_size, shuffle=False)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader, device_placement=False)
    predictions: dict[int, str] = {}
    for index_batch in loader:
        rows = [int(i) for i in index_batch]
        texts = generate_texts(
            model, tokenizer, [prompts[i] for i in rows], [task_ids[i] for i in rows], batch_size=len(rows),
            max_new_tokens=max_new_tokens, num_beams=num_beams, task_context=task_context, sort_by_length=False,
        )
        pairs = list(zip(rows, texts, strict=True))
        if accelerator is not None:
            pairs = accelerator.gather_for_metrics(pairs, use_gather_object=True)
        predictions.update((int(i), t) for i, t in pairs)
        if on_batch is not None:
            on_batch(len(pairs))
    if len(predictions) != len(examples):
        raise RuntimeError(f"gathered {len(predictions)} predictions for {len(examples)} examples")
    preds = [predictions[i] for i in range(len(examples))]
    report = compute_metrics(
        registry.tasks, [ex.task for ex in examples], preds, [ex.target for ex in examples], label_match=label_match
    )
    records = [
        {"index": i, "task": ex.task, "input": ex.input, "target": ex.target, "prediction": pred} | sample
        for i, (ex, pred, sample) in enumerate(zip(examples, preds, report.per_sample, strict=True))
    ]
    return EvalResult(report, records)


def prediction_row(line: str, where: str, registry, *, task: str | None = None, input_field: str = "input",
                   type_field: str = "type") -> dict:
    """One input of ``alter predict``: a JSON object with ``input`` and ``type`` (other fields are kept
    and passed through), or, with ``task``, the plain-text line itself. ``where`` (``file:line``)
    starts every message. Raises data.DataError / data.UnknownTaskError."""
    from .data import DataError, UnknownTaskError, json_object_line

    if task is not None:
        return {input_field: line, type_field: task}
    obj = json_object_line(line, where, "; plain text needs --task")
    for key in (input_field, type_field):
        if not isinstance(obj.get(key), str):
            raise DataError(f"{where}: field {key!r} missing or not a string")
    try:
        registry.id(obj[type_field])
    except UnknownTaskError as exc:
        raise UnknownTaskError(f"{where}: {exc}") from None
    return obj


def parse_prediction_inputs(
    text: str, source: str, registry, *, task: str | None = None, input_field: str = "input",
    type_field: str = "type",
) -> list[dict]:
    """All inputs of a JSON Lines / plain text (``--task``) `text` (lines split on "\\n" only), see
    :func:`prediction_row`. Raises data.DataError (``source:line:`` message; no inputs at all),
    data.UnknownTaskError."""
    from .data import DataError
    from .readers import jsonl_lines

    if task is not None:
        registry.id(task)
    rows = [prediction_row(line, f"{source}:{lineno}", registry, task=task, input_field=input_field,
                           type_field=type_field) for lineno, line in jsonl_lines(text)]
    if not rows:
        raise DataError(f"{source}: no inputs")
    return rows
