"""The `alter` console script: checks that the `alter` extra is installed, then runs the Typer app.

Imports nothing heavy itself, so that (a) `pip install alter-moire` without the extra gives one line
naming it instead of an ImportError traceback, and (b) Ctrl-C while torch/transformers are still
being imported ends with one line (exit 130) instead of a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import importlib.util
import os
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


def _exit_interrupted(echo: bool, code: int = 130) -> None:
    """Exit 130 after Ctrl-C (143 after SIGTERM), and really that code.

    CPython 3.11 keeps a process-wide "unhandled KeyboardInterrupt" flag that is set when the
    interrupt passes through code run by PyRun_* (as some extensions do while they are imported)
    and that catching the exception later does not clear; at exit the interpreter then re-raises
    SIGINT on itself and the shell sees -2 instead of our 130. So: flush logs and stdio, and leave
    through os._exit, which the flag cannot reach.
    """
    if echo:
        sys.stderr.write("alter: interrupted\n")
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to save
            pass
    os._exit(code)


def caused_by_interrupt(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt is in the chain of causes of `exc`: transformers' lazy imports
    re-raise whatever stops an import (Ctrl-C included) as ModuleNotFoundError "from" it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; a usage error (missing argument, unknown option) is one line
    `alter: error: …` with exit code 2."""
    missing = missing_extra()
    if missing:
        _error(f"error: alter needs the 'alter' extra ({', '.join(missing)} not installed): {INSTALL_HINT}", 2)
    try:
        from .cli import app
    except KeyboardInterrupt:
        _exit_interrupted(echo=True)
    except ImportError as exc:  # a broken install of one of the extra's packages
        if caused_by_interrupt(exc):
            _exit_interrupted(echo=True)
        _error(f"error: cannot import {exc.name or 'a dependency'} ({exc.__class__.__name__}); {INSTALL_HINT}", 2)
    import typer.main

    cmd = typer.main.get_command(app)
    _readable_help(cmd)
    try:
        code = cmd.main(args=sys.argv[1:] if argv is None else argv, prog_name="alter", standalone_mode=False)
    except KeyboardInterrupt:
        _exit_interrupted(echo=True)
    except Exception as exc:  # noqa: BLE001 - only click's usage errors are handled here
        if caused_by_interrupt(exc):  # Ctrl-C inside a lazy import, re-raised as another error
            _exit_interrupted(echo=True)
        if not any(c.__name__ == "UsageError" for c in type(exc).__mro__):
            raise
        if not exc.format_message():  # `alter` alone: the help screen was the answer
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _error(f"error: {exc.format_message()}{where}", 2)
    if code in (130, 143):  # a command that caught Ctrl-C / SIGTERM itself and said so (cli.interrupted)
        _exit_interrupted(echo=False, code=code)
    sys.exit(code if isinstance(code, int) else 0)


def _readable_help(cmd) -> None:
    """Help screens as a person reads them: flags without a type, `--set KEY=VALUE`, names upper-case."""
    for sub in getattr(cmd, "commands", {}).values():
        _readable_help(sub)
    make_help_option = cmd.get_help_option

    def flag_help_option(ctx, _make=make_help_option):
        option = _make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    cmd.get_help_option = flag_help_option
    for param in getattr(cmd, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.name in ("set", "set_"):
            param.metavar = "KEY=VALUE"
        elif param.metavar is None:
            param.metavar = param.name.upper()


if __name__ == "__main__":
    main()
