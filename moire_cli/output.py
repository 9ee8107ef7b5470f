"""Outputs shared by every `moire` command: an atomic output folder, atomic CSV/JSON/NPZ/PNG
writers and provenance. The figures themselves are drawn in :mod:`moire_cli.plots`.

Pattern::

    check_output_dir(out, overwrite)            # before computing: refuse an existing folder
    with atomic_output_dir(out, overwrite) as tmp:
        write_csv(tmp / "bands.csv", columns)
        write_json(tmp / "summary.json", summary)
    # on success tmp is renamed to out; on any exception nothing is left behind
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np


class OutputExistsError(FileExistsError):
    """The output folder exists and --overwrite was not given, or --overwrite may not replace it."""


#: Marker file written into every output folder of `moire`; --overwrite replaces only folders with it.
MARKER = ".moire-output"


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def _old_prefix(out: Path) -> str:
    return f".{out.name}.old-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or an odd number): leave its folder alone
    return True


def recover_output_dir(out: Path) -> list[str]:
    """Finish what a killed run (SIGKILL, power loss) left next to ``out``: its temporary folder
    ``.NAME.tmp-PID-*`` is removed; its set-aside old output ``.NAME.old-PID-*`` is moved back to
    ``out`` when ``out`` is missing (the kill fell between the two renames of a fallback swap), else
    removed. Only folders of dead processes that hold the :data:`MARKER` are touched.

    Returns:
        One line per action (for a log).
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    actions: list[str] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return actions
    for entry in entries:
        for prefix in (_tmp_prefix(out), _old_prefix(out)):
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)) or entry.is_symlink() or not (entry / MARKER).is_file():
                continue
            if prefix == _old_prefix(out) and not out.exists() and not out.is_symlink():
                os.replace(entry, out)
                actions.append(f"restored {out} from {entry.name} (a run was killed while replacing it)")
            else:
                shutil.rmtree(entry, ignore_errors=True)
                actions.append(f"removed {entry.name} left by a killed run")
    return actions


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Check, before any work, that the output folder ``out`` can be written (after
    :func:`recover_output_dir`).

    Raises:
        OutputExistsError: ``out`` is a symbolic link or not a folder (never replaced), an existing
            folder without ``overwrite``, or with ``overwrite`` a folder that is not an earlier output
            of `moire` (no :data:`MARKER` file).
        NotADirectoryError: a parent of ``out`` is a file.
        PermissionError: the nearest existing parent is not writable.
    """
    out = Path(out)
    recover_output_dir(out)
    if out.is_symlink():
        raise OutputExistsError(f"output path {out} is a symbolic link; give the folder itself")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a folder")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output folder {out} exists; pass --overwrite to replace it")
    if out.exists() and not (out / MARKER).is_file():
        raise OutputExistsError(
            f"output folder {out} was not written by moire (no {MARKER} marker): --overwrite replaces only "
            f"earlier moire outputs; choose another --out"
        )
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create output folder {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create output folder {out}: {parent} is not writable")


#: Signals that stop a run cleanly (the temporary folder is removed): what batch schedulers, cron,
#: `kill` and a closed terminal send.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class Stopped(SystemExit):
    """Raised by the SIGTERM/SIGHUP handler: exit status 128 + signal number, no traceback."""


def _stop(signum, frame):  # noqa: ARG001 (signal handler signature)
    name = signal.Signals(signum).name
    sys.stderr.write(f"moire: stopped by {name}\n")
    raise Stopped(128 + signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` (so ``finally`` clauses run and
    temporary files are removed) instead of killing the process; previous handlers are restored.
    Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``. An existing ``out`` is swapped atomically with
    ``tmp`` (renameat2) and then removed, so at every instant ``out`` is the old or the new output;
    where the swap is unsupported, old → ``.NAME.old-PID-*``, new → ``out``, old removed (a kill
    between the two renames is undone by :func:`recover_output_dir` on the next run)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = out.parent / f"{_old_prefix(out)}{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}"
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False, command: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder ``.NAME.tmp-PID-*`` next to ``out`` holding the :data:`MARKER`; on
    success it replaces ``out`` (an existing one only when ``overwrite`` and an earlier moire
    output, see :func:`check_output_dir` and :func:`_replace_dir`); on failure, Ctrl-C, SIGTERM or
    SIGHUP it is removed (signals exit with status 128 + signal number)."""
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with stop_on_signals():
        tmp = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(out)}{os.getpid()}-", dir=out.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a normal folder honours the umask
            from moire_cli import __version__

            (tmp / MARKER).write_text(
                json.dumps({"tool": "moire", "version": __version__, "command": command}) + "\n", encoding="utf-8")
            yield tmp
            check_output_dir(out, overwrite)
            blocked = set(STOP_SIGNALS) | {signal.SIGINT}
            if hasattr(signal, "pthread_sigmask"):  # the swap is not interrupted half-way
                signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            try:
                _replace_dir(tmp, out)
            finally:
                if hasattr(signal, "pthread_sigmask"):
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_file(path: Path, mode: str = "w") -> Iterator:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file honours the umask
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_jsonable(obj):
    """numpy scalars/arrays, tuples, Paths -> plain JSON types (recursively); NaN/±inf -> None
    (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())  # np.float64 NaN -> None like a Python float
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def blank_nan(values) -> list:
    """NaN -> '' (an empty CSV cell, the convention of :func:`write_csv`); other values unchanged."""
    return ["" if isinstance(v, (float, np.floating)) and np.isnan(v) else v for v in values]


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with _atomic_file(path) as fh:
        json.dump(to_jsonable(obj), fh, indent=2, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def write_csv(path: Path, columns: Mapping[str, Sequence], float_format: str = "{:.10g}") -> None:
    """Write equal-length columns {name: values} as CSV with a header row, atomically.

    Non-finite numbers (NaN, ±inf) are written as an empty cell, the same convention as ``null`` in
    JSON (:func:`to_jsonable`); flag columns say why a value is missing (docs/moire-inputs.md)."""
    names = list(columns)
    cols = [np.asarray(columns[k]) for k in names]
    n = {len(c) for c in cols}
    if len(n) > 1:
        raise ValueError(f"columns of unequal length: { {k: len(c) for k, c in zip(names, cols, strict=True)} }")

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return float_format.format(float(v)) if np.isfinite(v) else ""
        return v.item() if isinstance(v, np.generic) else v

    with _atomic_file(path) as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for row in zip(*cols, strict=True):
            w.writerow([fmt(v) for v in row])


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8), atomically."""
    with _atomic_file(path) as fh:
        fh.write(text)


def write_npz(path: Path, **arrays) -> None:
    """Write arrays to a compressed .npz, atomically."""
    with _atomic_file(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure to PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with _atomic_file(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def provenance() -> dict:
    """Versions of the toolkit and its numerical libraries, plus the constants (CODATA year)."""
    import matplotlib
    import pydantic
    import scipy

    from moire_cli import __version__
    from moire_cli.units import constants_metadata

    return {
        "moire_cli": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pydantic": pydantic.__version__,
        "matplotlib": matplotlib.__version__,
        "constants": constants_metadata(),
    }
