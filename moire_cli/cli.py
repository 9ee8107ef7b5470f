"""`moire` command line (Typer). Thin: resolve config, call the core, write outputs.

Every user error (config, paths, physics out of range) -> one line on stderr, exit code 2.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import numpy as np
import typer

from moire_cli.config import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="moire: lattice dynamics and melting of electronic and excitonic crystals in 2D moiré patterns.",
)


@app.callback()
def _root() -> None:
    """moire: lattice dynamics and melting of electronic and excitonic crystals in 2D moiré patterns."""


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr and return the exit (code 2) to raise."""
    typer.echo(f"moire: error: {message}", err=True)
    return typer.Exit(code=2)


def user_errors(fn):
    """Decorator: turn user-caused exceptions into one stderr line + exit code 2 (no traceback).

    User-caused: :class:`ConfigError` (config, overrides, physics out of range), an existing
    output, and OSError (paths, permissions, disk full). Anything else (ValueError from the
    numerical core, LinAlgError, …) is a bug and keeps its traceback (exit code 1).
    """
    from moire_cli.output import OutputExistsError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning  # numpy/matplotlib RuntimeWarnings: one line each
                return fn(*args, **kwargs)
        except (ConfigError, OutputExistsError) as err:
            raise fail(str(err)) from None
        except OSError as err:
            where = f": {err.filename}" if err.filename is not None else ""
            raise fail(f"{err.strerror or err}{where}") from None

    return wrapper


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning replacement: one stderr line instead of Python's two (message + source)."""
    text = " ".join(str(message).split())
    typer.echo(f"moire: warning: {category.__name__}: {text} ({Path(filename).name}:{lineno})", err=True)


def _log(console, message: str) -> None:
    if console.is_terminal:
        console.log(message, markup=False)
    else:
        typer.echo(message, err=True)


@app.command()
@user_errors
def phonons(
    config: Path = typer.Argument(..., help="YAML config (see configs/moire/)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config key: --set moire_potential.V=12"),
    out: Path = typer.Option(Path("runs/phonons"), "--out", help="Output folder (written atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Phonon bands, DOS and stability of a pinned moiré electronic crystal."""
    from rich.console import Console

    from moire_cli import output
    from moire_cli.config import PhononsConfig, load_config
    from moire_cli.phonon_output import write_phonons
    from moire_cli.phonon_run import run_phonons

    cfg = load_config(config, PhononsConfig, set_)
    output.check_output_dir(out, overwrite)
    console = Console()
    run = run_phonons(cfg, log=functools.partial(_log, console))
    for w in run.warnings:
        _log(console, f"warning: {w}")
    with output.atomic_output_dir(out, overwrite, "phonons") as tmp:
        write_phonons(tmp, run)
    _report(console, run, out)


def _report(console, run, out: Path) -> None:
    """The terminal summary: a rich table of ħω (and l_z when chiral) at the labelled points, then
    stability and chirality lines. On a TTY with colours; otherwise the same table in plain ASCII
    on stdout (readable in a log or a cron mail)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from moire_cli.units import convert_frequency

    cfg, res, summary = run.config, run.result, run.summary
    unit = cfg.output.frequency_unit
    st = res.stability
    chi = summary["chirality"]
    show_l_z = chi["chiral"]
    tty = console.is_terminal
    if not tty:
        console = Console(width=160, no_color=True, highlight=False, emoji=False)
    console.print(f"moire phonons: {res.model.crystal.name} → {out}", markup=False)
    t = Table(box=box.SIMPLE_HEAD if tty else box.ASCII)
    t.add_column("point")
    t.add_column("q (fractional)")
    t.add_column("mode", justify="right")
    t.add_column(f"ħω ({unit})", justify="right")
    if show_l_z:
        t.add_column("l_z (ħ)", justify="right")
    for lab, v in summary["frequencies_at_labels"].items():
        freqs = convert_frequency(np.asarray(v["frequencies_meV"]), unit)
        for mode, w in enumerate(freqs):
            first = mode == 0
            row = ["Γ" if lab == "G" and first else escape(lab) if first else "",
                   "({:.4f}, {:.4f})".format(*v["q_frac"]) if first else "", str(mode), f"{w:.4f}"]
            if show_l_z:
                row.append(f"{chi['at_labels'][lab]['l_z_hbar'][mode]:+.3f}")
            t.add_row(*row, end_section=mode == len(freqs) - 1)
    console.print(t)
    verdict = "stable" if st["stable"] else f"UNSTABLE ({st['unstable_modes']} imaginary modes, shown as ħω < 0)"
    w_min = float(convert_frequency(st["min_frequency_meV"], unit))
    console.print(
        f"{verdict}; min ħω = {w_min:.4g} {unit} at q_frac = "
        f"{np.round(summary['min_frequency_at']['q_frac'], 4).tolist()} ({st['where']})",
        markup=False,
    )
    console.print(
        f"B = {chi['magnetic_field_T']:g} T (ħω_c = {chi['hbar_omega_c_meV']:.4g} meV): "
        f"Chern numbers {chi['chern_numbers']}, max |l_z| = {chi['max_abs_l_z_hbar']:.3g} ħ, "
        f"L/N = {chi['thermal']['angular_momentum_per_particle_hbar']:.3g} ħ at {chi['thermal']['temperature_K']:g} K",
        markup=False,
    )
    if not tty:
        console.print(f"wrote {out}", markup=False)


# ------------------------------------------------------------------ moire melt
@app.command()
@user_errors
def melt(
    config: Path = typer.Argument(..., help="YAML config (see configs/moire/melt/)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config key: --set melt.lindemann_critical=0.2"),
    out: Path = typer.Option(Path("runs/melt"), "--out", help="Output folder (written atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address for the Monte Carlo points "
                                  "(tcp://host:8786), or 'serial'; default: a local cluster of processes."),
) -> None:
    """Quantum and thermal melting (Lindemann criterion) of electronic and excitonic moiré crystals."""
    from rich.console import Console

    from moire_cli import output
    from moire_cli.config import MeltConfig, load_config
    from moire_cli.melt_output import write_melt
    from moire_cli.melt_run import run_melt

    cfg = load_config(config, MeltConfig, [*(set_ or []), *([f"melt.scheduler={scheduler}"] if scheduler else [])])
    output.check_output_dir(out, overwrite)
    console = Console()
    run = run_melt(cfg, log=functools.partial(_log, console))
    for line in run.messages + [f"warning: {w}" for w in run.warnings]:
        _log(console, line)
    with output.atomic_output_dir(out, overwrite, "melt") as tmp:
        write_melt(tmp, run)
    _melt_report(console, run, out)


def _melt_report(console, run, out: Path) -> None:
    points, res = run.points, run.sweep
    head = [f"sweep_{k}" for k in points[0][0]]
    rows = []
    for i, (lab, _) in enumerate(points):
        tm = res.melting_temperature[i]
        verdict = ("unstable" if res.unstable[i] else "quantum melted" if res.quantum_melted[i]
                   else f"T_m = {tm:.4g} K" if np.isfinite(tm) else "T_m above melt.t_max")
        l0 = res.lindemann_ratio_zero[i]
        rows.append([str(lab[k]) for k in lab] + [f"{l0:.4f}" if np.isfinite(l0) else "—", verdict])
    change = res.mesh.change
    mesh = f"mesh {res.mesh.mesh}×{res.mesh.mesh} " + (
        f"(change {change:.2g})" if change is not None and np.isfinite(change) else "(single mesh, not refined)")
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    tty = console.is_terminal
    if not tty:  # the same table in plain ASCII, every row (a log or a cron mail)
        console = Console(width=200, no_color=True, highlight=False, emoji=False)
    console.print(f"moire melt → {out}: {mesh}", markup=False)
    t = Table(box=box.SIMPLE_HEAD if tty else box.ASCII)
    for h in head + ["L(0)", "result"]:
        t.add_column(escape(h))
    shown = rows[:40] if tty else rows
    for r in shown:
        t.add_row(*(escape(c) for c in r))
    console.print(t)
    if len(rows) > len(shown):
        console.print(f"… {len(rows) - len(shown)} more rows in melt.csv", markup=False)
    if not tty:
        console.print(f"wrote {out}", markup=False)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's UsageError (missing argument, unknown option, bad value), whichever click Typer uses."""
    return any(c.__name__ == "UsageError" for c in type(exc).__mro__)


def _readable_help(cmd) -> None:
    """Help screens as a person reads them: flags without a type, `--set KEY=VALUE`, `CONFIG`."""
    for sub in getattr(cmd, "commands", {}).values():
        _readable_help(sub)
    help_option = cmd.get_help_option

    def flag_help_option(ctx, _make=help_option):
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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: a usage error (missing argument, unknown option) is one line on
    stderr, `moire: error: …`, with exit code 2, like every other user error."""
    cmd = typer.main.get_command(app)
    _readable_help(cmd)
    try:
        code = cmd.main(args=sys.argv[1:] if argv is None else argv, prog_name="moire", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001 - only usage errors are handled here
        if not _is_usage_error(exc):
            raise
        if not exc.format_message():  # `moire` alone: the help screen was the answer
            return 2
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"moire: error: {exc.format_message()}{where}", err=True)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
