"""The checkpoint format of `alter`: what a checkpoint folder holds, how it is written, checked and loaded.

Layout of an MTA checkpoint (a folder): adapter_model.safetensors (MTA parameters only),
adapter_config.json (sorted keys, format_version, base model + config hash, task registry, MTA
config, stage, step), state/ (accelerate state for `--resume`) and, only when the backbone was
trained (train.unfreeze_backbone), backbone_model.safetensors with the trained backbone parameters
(named by `backbone_weights` in the config). A LoRA baseline checkpoint (`alter train-baseline`) is
PEFT's own adapter files plus alter_baseline.json, recognised by the latter (stage 0).

A checkpoint_manifest.json (written last) names the step and the sha256 of every file. A save is one
atomic step (`swap.py`): written into a hidden folder, committed by one rename, moved into place;
`recover_checkpoint` finishes or undoes an interrupted save, `verify_checkpoint` checks that all
files belong to one step.
Reading never trusts a file blindly: format version, registry, base-model config hash, weight
names and shapes are checked and every problem is a one-line CheckpointError.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from . import __version__, per_task, swap
from .config import ConfigError, MTAConfig
from .data import TaskRegistry
from .distributed import place_like, shard_like
from .inject import add_shared_experts, attach_mta, is_mta_param, mta_state_dict
from .models import BaseModelRef, ModelLoadError, load_base_model
from .mta import mta_layers
from .quiet import peft_quietly
from .readers import ReadError, load_json
from .records import check_checkpoint_record

FORMAT_VERSION = 1
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BACKBONE_WEIGHTS = "backbone_model.safetensors"
BASELINE_CONFIG = "alter_baseline.json"
STATE_DIR = "state"
LORA_MARK = "lora_"
MANIFEST = swap.MANIFEST
# Entries a checkpoint may hold at the top of its folder (a save retires those the new one lacks).
KNOWN_ENTRIES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, BACKBONE_WEIGHTS, BASELINE_CONFIG, STATE_DIR, per_task.ADAPTERS_DIR)


class CheckpointError(ValueError):
    """A corrupt, incomplete or mismatched checkpoint."""


@dataclass
class LoadedCheckpoint:
    model: Any
    tokenizer: Any
    registry: TaskRegistry
    mta_config: MTAConfig | None  # None for a LoRA baseline checkpoint (stage 0)
    stage: int
    base: BaseModelRef | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_seq2seq(self) -> bool:
        return getattr(self.model.config, "is_encoder_decoder", False)


def is_lora_param(name: str) -> bool:
    """True for the state-dict keys of LoRA weights (PEFT names them `...lora_A...`, `...lora_B...`)."""
    return LORA_MARK in name


def checkpoint_meta(bundle: Any, stage: int, step: int, data_cfg: Any = None) -> dict[str, Any]:
    has_shared = any(layer.shared is not None for layer in mta_layers(bundle.model))
    meta = {
        "format_version": FORMAT_VERSION,
        "alter_version": __version__,
        "stage": stage,
        "step": step,
        "base_model": bundle.base.to_dict(),
        "registry": bundle.registry.to_dict(),
        "mta_config": bundle.mta_config.model_dump(mode="json"),
        "has_shared_experts": has_shared,
    }
    if data_cfg is not None:
        meta["data"] = {k: getattr(data_cfg, k) for k in ("prompt_format", "max_length", "max_target_length")}
    return meta


def trained_backbone_names(model: Any) -> list[str]:
    """Names of the trainable parameters outside the MTA layers (non-empty only with unfreeze_backbone)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and not is_mta_param(n)]


def write_adapter(directory: Path, model: Any, meta: dict[str, Any], backbone_names: Sequence[str] = (),
                  weights: dict[str, torch.Tensor] | None = None) -> None:
    """adapter_model.safetensors + adapter_config.json (sorted keys) into `directory`; with
    `backbone_names` (trained backbone parameters) also backbone_model.safetensors, named in the meta.
    weights: the model's MTA (and trained backbone) state already gathered in full (under FSDP the
    model holds shards: `distributed.full_state`); None reads them from `model`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    mta = mta_state_dict(model) if weights is None else {k: v for k, v in weights.items() if is_mta_param(k)}
    save_file(mta, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    if backbone_names:
        params = dict(model.named_parameters()) if weights is None else weights
        save_file({n: params[n].detach().cpu().clone().contiguous() for n in backbone_names},
                  str(directory / BACKBONE_WEIGHTS), metadata={"format": "pt"})
        meta = {**meta, "backbone_weights": BACKBONE_WEIGHTS}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")


def file_mode() -> int:
    """The mode a normal new file gets (0666 minus the umask). safetensors writes its files 0600
    (through a temporary file); every file of a checkpoint gets this mode, so a shared checkpoint
    can be read by others."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def defer_sigint() -> Iterator[None]:
    """Hold Ctrl-C / SIGINT back while a checkpoint is being committed (hashes, renames), then
    deliver it, so that an interrupted run leaves its newest checkpoint in place rather than one for
    `--resume` to finish (`swap.recover` handles an interruption there too, e.g. a kill)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def recover_checkpoint(out_dir: Path) -> str | None:
    """Turn a run folder left by an interrupted save back into one whole checkpoint (the newest
    committed one; see swap.py). Main process only. Returns what was done (one line) or None.
    Raises CheckpointError for a damaged journal."""
    try:
        return swap.recover(Path(out_dir), KNOWN_ENTRIES)
    except (swap.SwapError, OSError) as exc:
        raise CheckpointError(f"checkpoint {str(out_dir)!r}: cannot recover an interrupted save ({exc})") from None


def save_checkpoint_files(out_dir: Path, step: int) -> None:
    """Commit the checkpoint written into `swap.writing_dir(out_dir)` (main process): manifest, then
    the atomic swap, with SIGINT deferred."""
    with defer_sigint():
        swap.commit(out_dir, step, file_mode(), KNOWN_ENTRIES)


def verify_checkpoint(path: Path, with_state: bool = False) -> dict[str, Any] | None:
    """Check that the checkpoint files of `path` all belong to the step its manifest names (sha256 of
    each; state/ only with `with_state`). Returns the manifest (None for a checkpoint written before
    manifests existed). Raises CheckpointError."""
    try:
        return swap.verify(path, skip=() if with_state else (STATE_DIR,))
    except (swap.SwapError, OSError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from None


def checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint in `path` (its manifest, else its adapter/baseline config), or None."""
    for name, key in ((MANIFEST, "step"), (BASELINE_CONFIG, "step"), (ADAPTER_CONFIG, "step")):
        try:
            step = json.loads((Path(path) / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    return None


def state_step(out_dir: Path) -> int | None:
    """The optimizer step stored in state/ (the loop position, custom_checkpoint_1.pkl), or None."""
    try:
        d = torch.load(out_dir / STATE_DIR / "custom_checkpoint_1.pkl", weights_only=True)
        return int(d["step"])
    except Exception:  # unreadable: reported by the resume's own checks
        return None


def check_same_step(out_dir: Path, meta_step: Any) -> None:
    """Before `--resume`: all files of the checkpoint are of one save. With a manifest, every file's
    hash; without one (older checkpoints), the step of the adapter config against that of state/."""
    manifest = verify_checkpoint(out_dir, with_state=True)
    if manifest is not None:
        if meta_step != manifest["step"]:
            raise CheckpointError(f"--resume: {str(out_dir)!r}: the adapter config is of step {meta_step!r}, "
                                  f"the manifest of step {manifest['step']}")
        return
    st = state_step(out_dir)
    if st is not None and st != meta_step:
        raise CheckpointError(f"--resume: {str(out_dir)!r}: state/ is of step {st}, the adapter files of step "
                              f"{meta_step!r} (an interrupted save of an older alter); not resuming from mixed files")


def read_meta(path: Path, config_name: str = ADAPTER_CONFIG) -> dict[str, Any]:
    """The checkpoint's JSON config `config_name`, after checking that the folder holds it and the
    adapter files, that it is valid JSON and of our format version.
    Raises CheckpointError."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such directory")
    if swap.interrupted_save(path):
        raise CheckpointError(f"checkpoint {str(path)!r}: a checkpoint save was interrupted while moving files into "
                              "place (run the training command again with --resume to finish it)")
    for name in dict.fromkeys((config_name, ADAPTER_CONFIG, ADAPTER_WEIGHTS)):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {str(path)!r}: missing {name}")
    try:
        meta = load_json((path / config_name).read_text(encoding="utf-8"))
    except (ReadError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {config_name} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: {config_name} format_version "
            f"{meta.get('format_version') if isinstance(meta, dict) else None!r} is not {FORMAT_VERSION}"
        )
    try:  # a hand-edited record (`"data": null`, wrong types) is one line here, not a traceback later
        check_checkpoint_record(meta, f"checkpoint {str(path)!r}: {config_name}")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return meta


def is_baseline_checkpoint(path: Path) -> bool:
    """True for a PEFT LoRA baseline checkpoint (`alter train-baseline`), recognised by its
    alter_baseline.json next to PEFT's own adapter files."""
    return (Path(path) / BASELINE_CONFIG).is_file()


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The adapter_config.json of a checkpoint folder, checked (format version, task registry),
    without loading any model. Raises CheckpointError."""
    path = Path(path)
    if is_baseline_checkpoint(path):
        return read_baseline_meta(path)
    meta = read_meta(path)
    try:
        TaskRegistry.from_dict(meta["registry"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: malformed task registry ({exc.__class__.__name__})") from None
    return meta


def load_mta_weights(model: Any, weights_file: Path) -> None:
    """Load MTA weights into a model whose MTA layers are attached; CheckpointError on key/shape mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{str(weights_file)!r}: unreadable safetensors ({exc})") from None
    expected = {k: v for k, v in model.state_dict().items() if is_mta_param(k)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{str(weights_file)!r}: MTA weights do not match the model ({what})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{str(weights_file)!r}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    model.load_state_dict(place_like(expected, state), strict=False)  # under FSDP: each process's shards


def load_backbone_weights(model: Any, weights_file: Path) -> None:
    """Load trained backbone parameters (backbone_model.safetensors); CheckpointError if the file is
    missing/unreadable or names a parameter the model lacks or with another shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{str(weights_file)!r}: unreadable safetensors ({exc})") from None
    expected = dict(model.named_parameters())
    for k, v in state.items():
        if k not in expected or is_mta_param(k):
            raise CheckpointError(f"{str(weights_file)!r}: unexpected backbone parameter {k}")
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{str(weights_file)!r}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    with torch.no_grad():
        for k, v in state.items():
            expected[k].copy_(shard_like(expected[k], v))  # under FSDP: this process's shard


def check_resumable(out_dir: Path, bundle: Any, stage: int, process_index: int = 0) -> None:
    """Before `--resume`: the checkpoint in `out_dir` must be complete and trained with the same
    base model, task registry, MTA config and stage as this run; CheckpointError naming the difference."""
    meta = read_meta(out_dir)
    now = checkpoint_meta(bundle, stage, 0)
    if isinstance(meta.get("mta_config"), dict):  # fields added since (e.g. gate_combine) take their defaults
        try:
            meta["mta_config"] = MTAConfig.model_validate(meta["mta_config"]).model_dump(mode="json")
        except ValidationError:
            pass  # reported below as a different MTA config
    for key, what in (("stage", "stage"), ("registry", "task registry (tasks:)"), ("mta_config", "MTA config (mta:)")):
        if meta.get(key) != now[key]:
            diff = ""
            if key == "mta_config" and isinstance(meta.get(key), dict):
                k = next((k for k in sorted(now[key]) if meta[key].get(k) != now[key][k]), None)
                diff = f": mta.{k} was {meta[key].get(k)!r}, now {now[key][k]!r}" if k else ""
            raise CheckpointError(f"--resume: {str(out_dir)!r} was trained with another {what}{diff}")
    if (meta.get("base_model") or {}).get("config_hash") != now["base_model"]["config_hash"]:
        raise CheckpointError(f"--resume: {str(out_dir)!r} was trained on another base model "
                              f"({(meta.get('base_model') or {}).get('name')!r})")
    check_base_weights(out_dir, meta.get("base_model"), bundle.base, "--resume:")
    check_state_complete(out_dir, process_index)
    check_same_step(out_dir, meta.get("step"))


def check_state_complete(out_dir: Path, process_index: int = 0) -> None:
    """The accelerate state of `out_dir` (weights, optimizer, scheduler, sampler, this rank's RNG)
    is all there; CheckpointError naming the first missing file otherwise."""
    from accelerate.utils import OPTIMIZER_NAME, RNG_STATE_NAME, SAFE_WEIGHTS_NAME

    state = out_dir / STATE_DIR
    needed = [SAFE_WEIGHTS_NAME, f"{OPTIMIZER_NAME}.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl",
              f"{RNG_STATE_NAME}_{process_index}.pkl"]
    missing = [n for n in needed if not (state / n).is_file()]
    if missing:
        raise CheckpointError(f"--resume: {str(state)!r} is incomplete (missing {missing[0]})")


class CheckpointWarning(Warning):
    """Something a user should know about a checkpoint that still loads (not a UserWarning: those
    are silenced with the libraries' noise)."""


def check_base_weights(path: Path, recorded: dict[str, Any] | None, ref: BaseModelRef, what: str = "checkpoint") -> None:
    """The base model `ref` (just loaded) has the weights the checkpoint's `base_model` record names.
    A checkpoint written before weight fingerprints existed gets a CheckpointWarning instead.
    Raises CheckpointError on a different fingerprint."""
    saved = (recorded or {}).get("weights_fingerprint")
    if saved is None:
        warnings.warn(CheckpointWarning(f"{what} {str(path)!r} records no weights fingerprint of its base model "
                                        "(written by an older alter); the base model's weights are not checked"),
                      stacklevel=2)
        return
    if saved != ref.weights_fingerprint:
        raise CheckpointError(f"{what} {str(path)!r}: base model {ref.name!r} has other weights than the one it was "
                              f"trained on (weights fingerprint {ref.weights_fingerprint}, recorded {saved})")


def load_checkpoint_base(path: Path, base: dict[str, Any]) -> Any:
    """Load the base model a checkpoint names (its `base_model` record) and check its config hash and
    weights fingerprint. Returns the models.LoadedModel. Raises CheckpointError (not loadable, or
    another config hash or weights fingerprint)."""
    try:
        loaded = load_base_model(base["name"], base.get("gguf_file"))
    except ModelLoadError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: base model: {exc}") from None
    if loaded.ref.config_hash != base.get("config_hash"):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: base model {base['name']!r} has config hash {loaded.ref.config_hash}, "
            f"the checkpoint was trained on {base.get('config_hash')}"
        )
    check_base_weights(path, base, loaded.ref)
    return loaded


def backbone_file(path: Path, name: Any) -> Path:
    """The trained-backbone file `name` (adapter_config.json's backbone_weights) inside the checkpoint
    folder `path`; CheckpointError for anything else (a path, `..`, a link out of the folder)."""
    if (not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".")
            or (path / name).resolve().parent != path.resolve()):
        raise CheckpointError(f"checkpoint {str(path)!r}: backbone_weights {name!r} is not a file inside the "
                              "checkpoint folder; refusing to load it")
    return path / name


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedCheckpoint:
    """Rebuild base model + MTA (incl. stage-2 shared experts and gate) from a checkpoint directory
    (or base model + PEFT LoRA adapter for a `train-baseline` checkpoint, stage 0).

    The model is returned in eval mode with every parameter frozen. Raises CheckpointError for a
    missing/corrupt checkpoint, a base model that cannot be loaded, or one whose config hash differs.
    """
    path = Path(path)
    if is_baseline_checkpoint(path):
        return load_baseline_checkpoint(path, device)
    meta = read_meta(path)
    verify_checkpoint(path)
    try:
        registry = TaskRegistry.from_dict(meta["registry"])
        mta_cfg = MTAConfig.model_validate(meta["mta_config"])
        base = meta["base_model"]
        stage = int(meta["stage"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: malformed {ADAPTER_CONFIG} ({exc.__class__.__name__})") from None
    loaded = load_checkpoint_base(path, base)
    model = loaded.model
    try:
        attach_mta(model, mta_cfg, registry)
        if meta.get("has_shared_experts"):
            add_shared_experts(model, mta_cfg)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot rebuild the MTA layers ({exc})") from None
    load_mta_weights(model, path / ADAPTER_WEIGHTS)
    if meta.get("backbone_weights"):
        load_backbone_weights(model, backbone_file(path, meta["backbone_weights"]))
    model.requires_grad_(False)
    model.to(device).eval()
    return LoadedCheckpoint(model, loaded.tokenizer, registry, mta_cfg, stage, loaded.ref, meta)



def read_baseline_meta(path: str | Path) -> dict[str, Any]:
    """alter_baseline.json of a baseline checkpoint, checked (format version, registry, PEFT files).
    Raises CheckpointError."""
    path = Path(path)
    if (path / per_task.ADAPTERS_DIR).is_dir():  # per-task LoRA: the PEFT files are in adapters/<task>/
        meta = _read_json(path)
        for sub in sorted((path / per_task.ADAPTERS_DIR).iterdir()):
            read_meta(sub, BASELINE_CONFIG)
    else:
        meta = read_meta(path, BASELINE_CONFIG)
    try:
        registry = TaskRegistry.from_dict(meta["registry"])
        meta["base_model"]["name"]
        if meta.get("method") == per_task.METHOD:
            missing = [t for t in registry.names if not (path / meta["adapters"][t]).is_dir()]
            if missing:
                raise KeyError(missing[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: malformed {BASELINE_CONFIG} ({exc.__class__.__name__}"
                              f"{': ' + str(exc) if isinstance(exc, KeyError) else ''})") from None
    return meta


def _read_json(path: Path) -> dict[str, Any]:
    """alter_baseline.json of a per-task LoRA folder (format version checked). Raises CheckpointError."""
    try:
        meta = json.loads((path / BASELINE_CONFIG).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {BASELINE_CONFIG} unreadable ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r}: {BASELINE_CONFIG} format_version is not {FORMAT_VERSION}")
    return meta


def load_baseline_checkpoint(path: str | Path, device: str = "cpu") -> LoadedCheckpoint:
    """Base model + PEFT LoRA adapter of a `train-baseline` checkpoint, eval mode, all frozen, stage 0.
    Raises CheckpointError (missing/corrupt files, base model not loadable or of another config hash,
    adapter weights that do not fit the model)."""
    from peft import PeftModel

    path = Path(path)
    meta = read_baseline_meta(path)
    verify_checkpoint(path)
    base = meta["base_model"]
    loaded = load_checkpoint_base(path, base)
    if meta.get("method") == per_task.METHOD:
        registry = TaskRegistry.from_dict(meta["registry"])
        try:
            model = per_task.load_task_adapters(loaded.model, {t: path / f for t, f in meta["adapters"].items()},
                                                registry.names)
        except Exception as exc:  # PEFT raises many types for a bad adapter; report one line
            raise CheckpointError(f"checkpoint {str(path)!r}: cannot load the per-task PEFT adapters "
                                  f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        model.to(device).eval()
        return LoadedCheckpoint(model, loaded.tokenizer, registry, None, 0, loaded.ref, meta)
    try:
        from safetensors import safe_open

        with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as f:
            n_saved = len(list(f.keys()))
        with peft_quietly():
            model = PeftModel.from_pretrained(loaded.model, str(path), is_trainable=False)
        n_model = sum(1 for k in model.state_dict() if is_lora_param(k))
        if n_model == 0 or n_saved != n_model:
            raise ValueError(f"{n_saved} LoRA tensors saved, the adapted model has {n_model}")
    except Exception as exc:  # PEFT/safetensors raise many types for a bad adapter; report one line
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot load the PEFT adapter "
                              f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    model.requires_grad_(False)
    model.to(device).eval()
    return LoadedCheckpoint(model, loaded.tokenizer, TaskRegistry.from_dict(meta["registry"]), None, 0, loaded.ref,
                            meta)
