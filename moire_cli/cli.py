"""`moire` command line (Typer). Thin: resolve config, call the core, write outputs.

Every user error (config, paths, physics out of range) -> one line on stderr, exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import typer

from moire_cli.config import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="moire: lattice dynamics and melting of electronic crystals in 2D moiré patterns.",
)


@app.callback()
def _root() -> None:
    """moire: lattice dynamics and melting of electronic crystals in 2D moiré patterns."""


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr and return the exit (code 2) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def user_errors(fn):
    """Decorator: turn user-caused exceptions into one stderr line + exit code 2 (no traceback)."""
    from moire_cli.output import OutputExistsError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, OutputExistsError) as err:
            raise fail(str(err)) from None
        except (ValueError, OSError) as err:
            raise fail(f"{type(err).__name__}: {err}") from None

    return wrapper


def _log(console, message: str) -> None:
    if console.is_terminal:
        console.log(message)
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

    from moire_cli import crystals, dynamics, output
    from moire_cli.config import PhononsConfig, load_config

    cfg = load_config(config, PhononsConfig, set_)
    output.check_output_dir(out, overwrite)
    console = Console()
    model = cfg.build_model()
    warnings = []
    if model.potential is not None and (w := model.potential.harmonic_warning(cfg.mass)):
        warnings.append(w)
    cr = model.crystal
    q_path, distance, labels = crystals.high_symmetry_path(cr, cfg.path.spec(), cfg.path.n_per_segment)
    q_mesh = crystals.monkhorst_pack(cr, cfg.mesh.size)
    _log(console, f"{cr.name}: {cr.n_sites} site(s)/cell, {len(q_path)} path + {len(q_mesh)} mesh q-points")
    res = dynamics.compute_phonons(model, q_path, q_mesh, cfg.relax, cfg.mesh.smearing_meV, cfg.mesh.n_energies)
    if res.relax is not None and not res.relax.hessian_psd:
        warnings.append(
            f"the q = 0 Hessian at the relaxed positions is not positive semidefinite "
            f"(lowest eigenvalue {res.relax.min_hessian_eigenvalue:.3g} meV/nm²): a saddle point"
        )
    for w in warnings:
        _log(console, f"warning: {w}")
    summary = _summary(cfg, model, res, labels, warnings)
    with output.atomic_output_dir(out, overwrite) as tmp:
        _write_outputs(tmp, cfg, res, distance, labels, summary)
    _report(console, cfg, res, labels, summary, out)


def _summary(cfg, model, res, labels, warnings) -> dict:
    from moire_cli.output import provenance

    cr0, cr = model.crystal, res.model.crystal
    st = res.stability
    pot = model.potential
    nm = res.path_frequencies.shape[1]
    at_labels = {}
    for i, lab in labels:
        at_labels.setdefault(lab, {"q_frac": cr.to_fractional(res.q_path[i]), "frequencies_meV": res.path_frequencies[i]})
    disp = res.relax.displacement if res.relax is not None else np.zeros_like(cr.basis)
    return {
        "command": "phonons",
        "config": cfg.model_dump(mode="json"),
        "provenance": provenance(),
        "codata_year": provenance()["constants"]["codata_year"],
        "crystal": {
            "name": cr.name,
            "cell_nm": cr.cell,
            "basis_initial_nm": cr0.basis,
            "basis_relaxed_nm": cr.basis,
            "displacement_nm": disp,
            "max_displacement_nm": float(np.linalg.norm(disp, axis=1).max()),
            "density_per_nm2": cr.density,
            "nearest_neighbour_distance_nm": cr.nearest_neighbour_distance,
        },
        "moire_potential": None
        if pot is None
        else {"V_meV": pot.V, "k_M_meV_per_nm2": pot.k_M, "hbar_omega_M_meV": pot.hbar_omega_M(cfg.mass),
              "barrier_meV": pot.barrier},
        "interaction": {"kind": model.interaction.name, "kappa": cfg.dielectric.kappa},
        "relaxation": None
        if res.relax is None
        else {"energy_per_cell_meV": res.relax.energy, "max_force_meV_per_nm": res.relax.max_force,
              "hessian_psd": res.relax.hessian_psd},
        "n_modes": nm,
        "frequencies_at_labels": at_labels,
        "stable": st["stable"],
        "min_frequency_meV": st["min_frequency_meV"],
        "min_frequency_at": {"where": st["where"], "q": st["q"], "q_frac": cr.to_fractional(st["q"]),
                             "mode": st["index"][1]},
        "unstable_modes": st["unstable_modes"],
        "warnings": warnings,
    }


def _write_outputs(tmp: Path, cfg, res, distance, labels, summary) -> None:
    from moire_cli import output
    from moire_cli.units import convert_frequency

    unit = cfg.output.frequency_unit
    cr = res.model.crystal
    n_q, n_m = res.path_frequencies.shape
    label_of = dict(labels)
    frac = cr.to_fractional(res.q_path)
    rep = np.repeat
    output.write_csv(
        tmp / "bands.csv",
        {
            "distance": rep(distance, n_m),
            "label": rep([label_of.get(i, "") for i in range(n_q)], n_m),
            "q_x": rep(res.q_path[:, 0], n_m),
            "q_y": rep(res.q_path[:, 1], n_m),
            "q_frac_1": rep(frac[:, 0], n_m),
            "q_frac_2": rep(frac[:, 1], n_m),
            "mode": np.tile(np.arange(n_m), n_q),
            f"frequency_{unit}": convert_frequency(res.path_frequencies, unit).ravel(),
        },
    )
    factor = float(convert_frequency(1.0, unit))
    output.write_csv(tmp / "dos.csv", {f"energy_{unit}": res.energies * factor, f"dos_per_{unit}": res.dos / factor})
    output.write_npz(
        tmp / "arrays.npz",
        q_path=res.q_path,
        path_distance=distance,
        path_frequencies_meV=res.path_frequencies,
        path_eigenvectors=res.path_eigenvectors,
        label_index=np.array([i for i, _ in labels]),
        label=np.array([lab for _, lab in labels]),
        q_mesh=res.q_mesh,
        mesh_frequencies_meV=res.mesh_frequencies,
        mesh_eigenvectors=res.mesh_eigenvectors,
        dos_energies_meV=res.energies,
        dos_per_meV=res.dos,
        cell=cr.cell,
        basis=cr.basis,
    )
    output.write_json(tmp / "summary.json", summary)
    if cfg.output.plot:
        fig = output.plot_bands_dos(
            distance,
            convert_frequency(res.path_frequencies, unit),
            labels,
            res.energies * factor,
            res.dos / factor,
            unit,
            title=f"{cr.name}, {cfg.interaction.kind}, a_M = {cfg.moire_potential.a_M:g} nm",
        )
        output.save_figure(fig, tmp / "bands.png")


def _report(console, cfg, res, labels, summary, out: Path) -> None:
    st = res.stability
    verdict = "stable" if st["stable"] else f"UNSTABLE ({st['unstable_modes']} imaginary modes)"
    line = (
        f"{verdict}; min ħω = {st['min_frequency_meV']:.4g} meV at q_frac = "
        f"{np.round(summary['min_frequency_at']['q_frac'], 4).tolist()} ({st['where']})"
    )
    if console.is_terminal:
        from rich.table import Table

        t = Table(title=f"moire phonons: {res.model.crystal.name} → {out}")
        t.add_column("point")
        t.add_column("q (fractional)")
        t.add_column("ħω (meV)")
        for lab, v in summary["frequencies_at_labels"].items():
            t.add_row("Γ" if lab == "G" else lab, str(np.round(v["q_frac"], 4).tolist()),
                      ", ".join(f"{x:.3f}" for x in v["frequencies_meV"]))
        console.print(t)
        console.print(line)
    else:
        for lab, v in summary["frequencies_at_labels"].items():
            typer.echo(f"{lab}: " + " ".join(f"{x:.4f}" for x in v["frequencies_meV"]) + " meV")
        typer.echo(line)
        typer.echo(f"wrote {out}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="moire")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
