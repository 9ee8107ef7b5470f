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
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np


class OutputExistsError(FileExistsError):
    """The output folder exists and --overwrite was not given."""


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Check, before any work, that the output folder ``out`` can be written.

    Raises:
        OutputExistsError: ``out`` is an existing file, or an existing folder without ``overwrite``.
        NotADirectoryError: a parent of ``out`` is a file.
        PermissionError: the nearest existing parent is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a folder")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output folder {out} exists; pass --overwrite to replace it")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create output folder {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create output folder {out}: {parent} is not writable")


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``out``; on success rename it to ``out`` (replacing an
    existing one only when ``overwrite``), on failure remove it."""
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a normal folder honours the umask
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        check_output_dir(out, overwrite)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with _atomic_file(path) as fh:
        json.dump(to_jsonable(obj), fh, indent=2, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def write_csv(path: Path, columns: Mapping[str, Sequence], float_format: str = "{:.10g}") -> None:
    """Write equal-length columns {name: values} as CSV with a header row, atomically."""
    names = list(columns)
    cols = [np.asarray(columns[k]) for k in names]
    n = {len(c) for c in cols}
    if len(n) > 1:
        raise ValueError(f"columns of unequal length: { {k: len(c) for k, c in zip(names, cols, strict=True)} }")

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return float_format.format(float(v))
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
