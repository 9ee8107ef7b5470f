"""A checkpoint save as one atomic step: a journal of three hidden folders and a manifest written last.

The files of a checkpoint live at the top of the run folder (adapter files, state/, ...), where PEFT,
`alter eval` and users expect them, so one save replaces several entries. It runs as a transaction:

1. `begin(out)`: every rank writes the new checkpoint into `out/.checkpoint-tmp/` (discarded by
   `recover` if the process dies here: the old checkpoint stays as it was).
2. `commit(out, step)`: the main process hashes every file (sha256) into the manifest
   `checkpoint_manifest.json` (step + hash of each file), flushes files and folders to disk and
   renames `.checkpoint-tmp/` to `.checkpoint-new/`: from this instant the new checkpoint wins.
3. `_roll_forward`: for each entry still in `.checkpoint-new/`, the entry of the same name at the top
   (the old one) is moved into `.checkpoint-old/` and the new one moved in; stale entries of the old
   checkpoint are retired too; the new manifest moves in last; `.checkpoint-old/` is deleted.

A kill at any file operation leaves a folder that `recover` turns into exactly the old or exactly the
new checkpoint (idempotent: a kill during recovery is recovered again). `verify` checks that every
file listed in the manifest is there with its hash, i.e. that all files belong to the same step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "checkpoint_manifest.json"
MANIFEST_VERSION = 1
WRITING = ".checkpoint-tmp"  # a save being written; discarded by recover()
PENDING = ".checkpoint-new"  # a complete save being moved into place; rolled forward by recover()
RETIRED = ".checkpoint-old"  # entries of the replaced checkpoint; deleted at the end of a swap
LEGACY_STATE_OLD = ".state-old"  # the swap of alter <= 0.x moved state/ aside under this name


class SwapError(ValueError):
    """A manifest that is missing, malformed or does not match the files."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        os.unlink(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def begin(out: Path) -> Path:
    """Main process, before a save: finish or undo an interrupted one (`recover`), then return a
    fresh, empty `out/.checkpoint-tmp/` to write the new checkpoint into."""
    out.mkdir(parents=True, exist_ok=True)
    recover(out)
    folder = out / WRITING
    if folder.exists():
        _remove(folder)
    folder.mkdir()
    return folder


def writing_dir(out: Path) -> Path:
    return out / WRITING


def discard(out: Path) -> None:
    """Best effort after a failed save before its commit: remove `.checkpoint-tmp/`."""
    shutil.rmtree(out / WRITING, ignore_errors=True)


def commit(out: Path, step: int, mode: int | None = None, known: tuple[str, ...] = ()) -> None:
    """Make the checkpoint in `out/.checkpoint-tmp/` the checkpoint of `out` (main process).

    mode: permission bits given to every file first (safetensors writes 0600); known: see `recover`.
    Writes the manifest
    (sha256 of every file, step), flushes all to disk, renames the folder to `.checkpoint-new/`
    (the commit point) and moves its entries into place."""
    folder = out / WRITING
    files: dict[str, str] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel == MANIFEST:
            continue
        if mode is not None:
            os.chmod(f, mode)
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
        files[rel] = file_sha256(f)
    manifest = {"manifest_version": MANIFEST_VERSION, "step": int(step), "files": files}
    with open(folder / MANIFEST, "w") as fh:
        fh.write(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if mode is not None:
        os.chmod(folder / MANIFEST, mode)
    for d in sorted({p.parent for p in folder.rglob("*")} | {folder}, key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    os.rename(folder, out / PENDING)
    _fsync_dir(out)
    _roll_forward(out, known)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest file at `path` (dict with step and files {relative path: sha256}); SwapError."""
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SwapError(f"{MANIFEST} unreadable ({exc.__class__.__name__})") from None
    if (not isinstance(m, dict) or m.get("manifest_version") != MANIFEST_VERSION or not isinstance(m.get("files"), dict)
            or not isinstance(m.get("step"), int) or not all(isinstance(v, str) for v in m["files"].values())):
        raise SwapError(f"{MANIFEST} is malformed")
    return m


def _entries(manifest: dict[str, Any]) -> list[str]:
    """Top-level names of a manifest's files (e.g. state, adapter_model.safetensors)."""
    return sorted({rel.split("/", 1)[0] for rel in manifest["files"]})


def _retire(out: Path, name: str) -> None:
    """Move the entry `name` at the top of `out` into `.checkpoint-old/` (replacing one there)."""
    src = out / name
    if not (src.exists() or src.is_symlink()):
        return
    retired = out / RETIRED
    retired.mkdir(exist_ok=True)
    if (retired / name).exists() or (retired / name).is_symlink():
        _remove(retired / name)
    os.rename(src, retired / name)


def _roll_forward(out: Path, known: tuple[str, ...] = ()) -> None:
    pending = out / PENDING
    entries = _entries(read_manifest(pending / MANIFEST))
    for name in (*known, MANIFEST):  # entries of the old checkpoint the new one does not have
        if name not in entries:
            _retire(out, name)
    for name in entries:
        if (pending / name).exists():  # not moved in yet: what is at the top is the old entry
            _retire(out, name)
            os.rename(pending / name, out / name)
    os.rename(pending / MANIFEST, out / MANIFEST)
    _fsync_dir(out)
    if (out / RETIRED).exists():
        shutil.rmtree(out / RETIRED)
    os.rmdir(pending)


def recover(out: Path, known: tuple[str, ...] = ()) -> str | None:
    """Bring `out` back to one whole checkpoint after an interrupted save (main process; idempotent).

    known: names a checkpoint of this tool may hold at the top (retired when the new one lacks them).
    Returns a one-line description of what was done, or None when there was nothing to do."""
    done = None
    if (out / WRITING).exists():
        _remove(out / WRITING)
        done = "discarded an unfinished checkpoint save"
    pending = out / PENDING
    if pending.is_dir():
        if (pending / MANIFEST).is_file():
            try:
                step = read_manifest(pending / MANIFEST)["step"]
            except SwapError:
                step = None
            if step is not None:
                _roll_forward(out, known)
                done = f"finished an interrupted checkpoint save (step {step})"
            else:  # cannot happen through commit(); a damaged journal is left alone for a person to see
                raise SwapError(f"{str(pending)!r}: {MANIFEST} is malformed")
        else:  # every entry and the manifest were moved in: only the clean-up was left
            if (out / RETIRED).exists():
                shutil.rmtree(out / RETIRED)
            os.rmdir(pending)
            done = done or "finished the clean-up of a checkpoint save"
    elif (out / RETIRED).exists():
        shutil.rmtree(out / RETIRED)
    legacy = out / LEGACY_STATE_OLD
    if legacy.is_dir():
        if not (out / "state").exists():
            os.rename(legacy, out / "state")
            done = "put back state/ from an interrupted checkpoint swap (.state-old)"
        else:
            shutil.rmtree(legacy)
    sibling = out.parent / f".{out.name}.tmp-save"  # the temporary folder of alter <= 0.x
    if sibling.is_dir():
        shutil.rmtree(sibling, ignore_errors=True)
    return done


def interrupted_save(out: Path) -> bool:
    """True while `out` holds a save that was committed but not yet moved into place."""
    return (out / PENDING).is_dir()


def verify(out: Path, skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Check that the files of `out` are those its manifest names (sha256), i.e. of one save.

    skip: top-level entries not to check (e.g. state/ when only the model is loaded). Returns the manifest, or None for a checkpoint
    written before manifests existed. Raises SwapError naming the first file that does not match."""
    if interrupted_save(out):
        raise SwapError("a checkpoint save was interrupted while moving files into place (run the training "
                        "command again with --resume to finish it)")
    if not (out / MANIFEST).is_file():
        return None
    manifest = read_manifest(out / MANIFEST)
    for rel, digest in sorted(manifest["files"].items()):
        if rel.split("/", 1)[0] in skip:
            continue
        path = out / rel
        if not path.is_file():
            raise SwapError(f"{rel} is missing (the manifest names it for step {manifest['step']})")
        if file_sha256(path) != digest:
            raise SwapError(f"{rel} does not belong to step {manifest['step']} (its contents differ from the "
                            "manifest's)")
    return manifest
