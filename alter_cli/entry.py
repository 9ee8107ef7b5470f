"""The `alter` console script: checks that the `alter` extra is installed, then runs the Typer app.

Imports nothing heavy itself, so that (a) `pip install alter-moire` without the extra gives one line
naming it instead of an ImportError traceback, and (b) Ctrl-C while torch/transformers are still
being imported ends with one line (exit 130) instead of a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import importlib.util
import sys

# import name -> distribution name (those of the `alter` extra in pyproject.toml)
ALTER_EXTRA = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "peft": "peft",
               "safetensors": "safetensors", "rouge_score": "rouge-score", "gguf": "gguf"}
INSTALL_HINT = "pip install 'alter-moire[alter]'"


def missing_extra() -> list[str]:
    """Distributions of the `alter` extra that cannot be found (no import is done)."""
    missing = []
    for module, dist in ALTER_EXTRA.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(dist)
    return missing


def _error(message: str, code: int) -> None:
    sys.stderr.write(f"alter: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main() -> None:
    missing = missing_extra()
    if missing:
        _error(f"error: alter needs the 'alter' extra ({', '.join(missing)} not installed): {INSTALL_HINT}", 2)
    try:
        from .cli import app
    except KeyboardInterrupt:
        _error("interrupted", 130)
    except ImportError as exc:  # a broken install of one of the extra's packages
        _error(f"error: cannot import {exc.name or 'a dependency'} ({exc.__class__.__name__}); {INSTALL_HINT}", 2)
    try:
        app()
    except KeyboardInterrupt:
        _error("interrupted", 130)


if __name__ == "__main__":
    main()
