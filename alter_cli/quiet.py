"""Quiet logs (issue 12 §5): a cron mail or a CI log of `alter` carries only alter's own lines.

Third-party libraries (transformers, peft, accelerate, torch, huggingface_hub, numpy) warn about
their own deprecations and draw progress bars; neither is anything an `alter` user can act on.
`quiet_third_party` turns those off for the process (the CLI calls it before loading a model);
`peft_quietly` silences, at the call site, the one FutureWarning that PEFT triggers on every
`get_peft_model` / `PeftModel.from_pretrained` with transformers >= 5 (PEFT reads the deprecated
`PreTrainedModel.is_gradient_checkpointing` property).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

THIRD_PARTY = r"(transformers|peft|accelerate|torch|huggingface_hub|safetensors|numpy|gguf|tokenizers)(\.|$)"


def quiet_third_party() -> None:
    """Warnings raised inside third-party modules (FutureWarning, DeprecationWarning, UserWarning) are
    ignored; transformers' and huggingface_hub's logging at error level and progress bars off."""
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Around PEFT model construction: PEFT's access to transformers' deprecated
    `is_gradient_checkpointing` property warns (FutureWarning) once per model; that one is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
