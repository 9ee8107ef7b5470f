"""Batched generation for evaluation and prediction: prompt encoding (as in training), padding, greedy or
beam-search generation with the KV cache, routed per task through the MTA layers (spec ``shared/spec/alter.md``
section 4). Pure core: no files, no printing."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

TaskContext = Callable[..., contextlib.AbstractContextManager]


def default_task_context(model) -> TaskContext:
    """``mta.task_context`` for a model with MTA layers; the model's own ``alter_task_context`` where
    it has one (per-task LoRA, :mod:`alter_cli.per_task`); a no-op context for a bare base model
    (zero-shot evaluation), which has no per-task routing."""
    from .mta import mta_layers, task_context

    own = getattr(model, "alter_task_context", None)
    if own is not None:
        return own
    if mta_layers(model):
        return task_context
    return lambda _model, _task_ids: contextlib.nullcontext()


def pad_prompts(
    prompts: Sequence[Sequence[int]], pad_token_id: int, *, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into ``input_ids`` and ``attention_mask``, both LongTensor (B, L_max).

    ``left=True`` for decoder-only models (generation continues at the right edge of every row),
    ``left=False`` for encoder-decoder models.
    """
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        sl = slice(width - len(p), width) if left else slice(0, len(p))
        input_ids[row, sl] = torch.as_tensor(list(p), dtype=torch.long)
        attention_mask[row, sl] = 1
    return input_ids, attention_mask


def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    task_ids: Sequence[int],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    num_beams: int = 1,
    task_context: TaskContext | None = None,
    sort_by_length: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Generate a continuation for each prompt, in batches, with the KV cache.

    Greedy decoding by default, beam search with ``num_beams > 1`` (HF ``generate`` expands each
    sample into ``num_beams`` rows with ``repeat_interleave``; the MTA layers repeat the task ids the
    same way). Prompts are padded on the left for decoder-only models and on the right for
    encoder-decoder ones; with ``sort_by_length`` the prompts are batched by length (less padding)
    and the outputs returned in input order. Only the newly generated tokens are decoded.

    Args:
        model: a Hugging Face causal or seq2seq LM (with or without MTA layers), in eval mode.
        tokenizer: its tokenizer (for pad/eos ids and decoding).
        prompts: N token-id lists (formatted prompts; the encoder input for seq2seq models).
        task_ids: (N,) task id of each prompt, passed per batch as a LongTensor (B,) through
            ``task_context(model, task_ids)`` (default: :func:`default_task_context`).
        on_batch: called with the number of samples after each batch (progress bars).

    Returns:
        N decoded strings (special tokens skipped, surrounding whitespace stripped).

    Raises:
        ValueError: length mismatch, an empty prompt, or a non-positive batch size / beam count;
        data.DataError: a prompt + max_new_tokens longer than the model's positions.
    """
    import torch

    if len(prompts) != len(task_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(task_ids)} task ids")
    if batch_size < 1 or num_beams < 1 or max_new_tokens < 1:
        raise ValueError("batch_size, num_beams and max_new_tokens must be >= 1")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    from .models import check_positions

    check_positions(model, max(len(p) for p in prompts) + max_new_tokens, "the longest prompt + max_new_tokens")
    context = task_context if task_context is not None else default_task_context(model)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token")

    gen_config = copy.deepcopy(model.generation_config)
    gen_config.update(
        max_new_tokens=max_new_tokens, min_new_tokens=None, max_length=None, do_sample=False,
        num_beams=num_beams, num_return_sequences=1, temperature=None, top_p=None, top_k=None,
        pad_token_id=pad_id, eos_token_id=eos_id if eos_id is not None else gen_config.eos_token_id,
        early_stopping=True if num_beams > 1 else gen_config.early_stopping, use_cache=True,
    )

    order = np.arange(len(prompts))
    if sort_by_length:
        order = np.argsort([-len(p) for p in prompts], kind="stable")
    device = next(model.parameters()).device
    outputs: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = pad_prompts([prompts[i] for i in rows], pad_id, left=not encoder_decoder)
            tids = torch.as_tensor([int(task_ids[i]) for i in rows], dtype=torch.long, device=device)
            with context(model, tids):
                generated = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                    generation_config=gen_config,
                )
            new_tokens = generated if encoder_decoder else generated[:, input_ids.shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text in zip(rows, texts, strict=True):
                outputs[i] = text.strip()
            if on_batch is not None:
                on_batch(len(rows))
    return outputs


def encode_prompts(
    tokenizer, inputs: Sequence[str], is_seq2seq: bool, prompt_format: str = "auto", max_length: int = 512
) -> list[list[int]]:
    """Prompt token ids as in training (``data.prompt_ids``), truncated to ``max_length`` tokens
    (from the left for causal LMs, keeping the end of the prompt; from the right for seq2seq)."""
    from .data import prompt_ids

    out = []
    for text in inputs:
        ids = prompt_ids(tokenizer, text, is_seq2seq, prompt_format, max_length)
        out.append(ids[:max_length] if is_seq2seq else ids[-max_length:])
    return out
