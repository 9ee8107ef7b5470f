"""An output folder of `alter`: the marker saying alter wrote it, the lock held while a run writes it,
and the one rule of `--overwrite` for every command.

- Marker: every folder alter writes (training runs, `alter eval` outputs, `alter data` datasets)
  holds `.alter-output` (JSON: tool, kind, alter version). `--overwrite` replaces only a folder with
  the marker, or one an earlier alter wrote before markers existed (recognised by its files), and
  never touches a file, a symlink or any other folder (`check_replaceable`).
- Lock: a training run holds an exclusive `flock` on `<out>/.alter.lock` from the start to the end,
  so a second run on the same folder (two `--resume`, a resume during a run) is refused in one line
  instead of racing on the checkpoint. The kernel drops the lock when the process dies, whatever kills it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from . import __version__

MARKER = ".alter-output"
LOCK = ".alter.lock"
# What an alter of before markers left in each kind of folder (all of a tuple's names present).
LEGACY_SIGNS = {
    "train": (("adapter_config.json",), ("alter_baseline.json",), ("state/custom_checkpoint_1.pkl",),
              ("resolved_config.yaml",)),
    "eval": (("metrics.json", "metrics.csv", "predictions.jsonl"), ("metrics.json", "comparison.csv")),
    "data": (("train.jsonl", "tasks.json", "manifest.json"),),
}


class OutputFolderError(ValueError):
    """An --out folder that may not be written, replaced or resumed."""


def is_empty_dir(path: Path) -> bool:
    """A folder holding nothing, or only the marker and lock of a run that never wrote anything."""
    return path.is_dir() and not path.is_symlink() and all(p.name in (LOCK, MARKER) for p in path.iterdir())


def remove_if_unused(path: Path) -> None:
    """Remove `path` when it holds only the marker and lock (a run that failed before writing)."""
    if is_empty_dir(path):
        for name in (MARKER, LOCK):
            (path / name).unlink(missing_ok=True)
        try:
            path.rmdir()
        except OSError:
            pass


def output_kind(path: Path) -> str | None:
    """The kind ("train", "eval", "data") of the alter output in `path`, or None when `path` is not a
    plain folder alter wrote."""
    if not path.is_dir() or path.is_symlink():
        return None
    marker = path / MARKER
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return meta.get("kind") if isinstance(meta, dict) and meta.get("tool") == "alter" else None
    for kind, signs in LEGACY_SIGNS.items():
        if any(all((path / n).exists() for n in names) for names in signs):
            return kind
    return None


def check_replaceable(out: Path, kind: str, flag: str = "--overwrite") -> None:
    """Refuse (OutputFolderError, one line) to replace `out` unless it is an earlier alter output of
    `kind`. A missing or empty `out` is fine."""
    if not (out.exists() or out.is_symlink()) or is_empty_dir(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise OutputFolderError(f"{flag}: {str(out)!r} is not a folder; not touching it")
    found = output_kind(out)
    if found != kind:
        what = f"an alter {found} output, not {kind}" if found else "not an alter output"
        raise OutputFolderError(f"{flag}: {str(out)!r} is {what} (no {MARKER}); not deleting it")


def write_marker(folder: Path, kind: str) -> None:
    """Write `.alter-output` into `folder` (tmp + rename)."""
    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"tool": "alter", "kind": kind, "alter_version": __version__}, sort_keys=True) + "\n")
    os.replace(tmp, folder / MARKER)


def marker_text(kind: str) -> str:
    """The marker's contents, for writers that assemble a folder from {name: text}."""
    return json.dumps({"tool": "alter", "kind": kind, "alter_version": __version__}, sort_keys=True) + "\n"


def clear_folder(out: Path) -> None:
    """Remove everything inside `out` except the lock file (so a held lock stays valid)."""
    for p in out.iterdir():
        if p.name == LOCK:
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


class OutLock:
    """An exclusive, non-blocking flock on `<out>/.alter.lock` (Linux, macOS; no-op where fcntl is
    missing). acquire() raises OutputFolderError naming the holder's pid when another process has it."""

    def __init__(self, out: Path):
        self.out = out
        self.fd: int | None = None

    def acquire(self) -> OutLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            return self
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputFolderError(f"output folder {str(self.out)!r} is in use by another alter run (pid {holder}); "
                                    "wait for it to finish or use another --out") from None
        except OSError:  # a file system without flock (some network mounts): run unlocked
            os.close(fd)
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def provenance() -> dict[str, Any]:
    """The versions an output folder records in provenance.json (alter, Python, torch, transformers, accelerate)."""
    import accelerate
    import torch
    import transformers

    return {"alter_version": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}
