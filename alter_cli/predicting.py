"""`alter predict` as a stream: input lines are read as they come, each batch's predictions are
written (and flushed) as soon as they are ready, so `alter predict ck < big.jsonl | head -3` prints
its first lines after the first batch, not after the whole input.

Input: bytes split on b"\\n" only (a trailing "\\r" and a leading byte-order mark dropped), decoded
as UTF-8 line by line: a line that is not UTF-8 is a one-line DataError naming its number (U+2028
and friends inside a line are data, see `readers.jsonl_lines`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO


def input_lines(stream: BinaryIO, source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a binary stream (file or stdin), lazily.
    Raises data.DataError `source:N: not UTF-8 text (...)`."""
    from .data import DataError

    for lineno, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1})") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        line = line.removesuffix("\n").removesuffix("\r")
        if line.strip():
            yield lineno, line


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` consecutive items (the last one shorter), lazily."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_stream(ck: Any, lines: Iterable[tuple[int, str]], source: str, *, task: str | None,
                   generation: Any, write: Callable[[str], None]) -> int:
    """Predict for every input line and `write` one JSON line per input (the input object +
    `prediction`, and `matched_label` for classify/nli tasks), batch by batch, in input order.

    ck: a loaded checkpoint (checkpoint.load_checkpoint); generation: config.GenerateConfig.
    Returns the number of inputs. Raises data.DataError / UnknownTaskError (`source:N: ...`) for a
    malformed line (after the lines before it were written) or no inputs at all.
    """
    from .data import DataError
    from .evaluate import prediction_row
    from .generation import encode_prompts, generate_texts
    from .metrics import match_label

    data_meta = ck.meta.get("data") or {}
    prompt_format = data_meta.get("prompt_format", "auto")
    max_length = data_meta.get("max_length", 512)
    if task is not None:
        ck.registry.id(task)
    n = 0
    rows_iter = (prediction_row(line, f"{source}:{lineno}", ck.registry, task=task) for lineno, line in lines)
    for rows in batched(rows_iter, generation.batch_size):
        prompts = encode_prompts(ck.tokenizer, [r["input"] for r in rows], ck.is_seq2seq, prompt_format, max_length)
        preds = generate_texts(ck.model, ck.tokenizer, prompts, [ck.registry.id(r["type"]) for r in rows],
                               batch_size=len(rows), max_new_tokens=generation.max_new_tokens,
                               num_beams=generation.num_beams)
        for row, pred in zip(rows, preds, strict=True):
            spec = ck.registry.spec(row["type"])
            rec = row | {"prediction": pred}
            if spec.labels:
                rec["matched_label"] = match_label(pred, spec.labels, mode=generation.label_match)
            write(json.dumps(rec, ensure_ascii=False))
        n += len(rows)
    if n == 0:
        raise DataError(f"{source}: no inputs")
    return n
