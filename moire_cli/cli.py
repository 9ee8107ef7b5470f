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
            return fn(*args, **kwargs)
        except (ConfigError, OutputExistsError) as err:
            raise fail(str(err)) from None
        except OSError as err:
            where = f": {err.filename}" if err.filename is not None else ""
            raise fail(f"{err.strerror or err}{where}") from None

    return wrapper


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
    try:
        q_path, distance, labels = crystals.high_symmetry_path(cr, cfg.path.spec(), cfg.path.n_per_segment)
    except ValueError as err:  # a label this cell does not have
        raise ConfigError(f"config: path.points: {err}") from None
    q_mesh = crystals.monkhorst_pack(cr, cfg.mesh.size)
    _log(console, f"{cr.name}: {cr.n_sites} site(s)/cell, {len(q_path)} path + {len(q_mesh)} mesh q-points")
    res = dynamics.compute_phonons(model, q_path, q_mesh, cfg.relax, cfg.mesh.smearing_meV, cfg.mesh.n_energies)
    res, chiral = _chirality(cfg, res)
    if res.relax is not None and not res.relax.hessian_psd:
        warnings.append(
            f"the q = 0 Hessian at the relaxed positions is not positive semidefinite "
            f"(lowest eigenvalue {res.relax.min_hessian_eigenvalue:.3g} meV/nm²): a saddle point"
        )
    for w in warnings:
        _log(console, f"warning: {w}")
    summary = _summary(cfg, model, res, labels, warnings)
    summary["chern_numbers"] = chiral.summary()["chern_numbers"]
    summary["chirality"] = {"magnetic_field_T": cfg.chirality.magnetic_field_T, **chiral.summary()}
    at_labels = summary["chirality"]["at_labels"] = {}
    for i, lab in labels:
        at_labels.setdefault(
            lab,
            {
                "l_z_hbar": chiral.l_z[i] + 0.0,
                "mu_z_muB": chiral.mu_z[i] + 0.0,
                "berry_curvature_nm2": chiral.berry_curvature[i] + 0.0,
                "degenerate": chiral.degenerate[i],
            },
        )
    with output.atomic_output_dir(out, overwrite) as tmp:
        _write_outputs(tmp, cfg, res, distance, labels, summary, *_chirality_outputs(chiral))
        _plot_chirality(tmp, cfg, res, chiral, distance, labels)
    _report(console, cfg, res, labels, summary, out)


def _chirality(cfg, res):
    """Chiral phonons of the relaxed crystal (spec §6). Under B ≠ 0 the reported bands, DOS and
    stability become those of the gyroscopic problem (all ω real = stable)."""
    import dataclasses

    from moire_cli import chirality, dynamics, gyroscopic

    cr = res.model.crystal
    chi = cfg.chirality
    charge = chi.carrier_charge(cfg.moire_potential.carrier)
    omega_c = gyroscopic.cyclotron_energy(chi.magnetic_field_T, cfg.mass, charge)
    chiral = chirality.chiral_phonons(
        functools.partial(dynamics.dynamical_matrix, res.model),
        res.q_path,
        res.q_mesh,
        cfg.mesh.size,
        cr.basis,
        cr.reciprocal,
        omega_c=omega_c,
        mass=cfg.mass,
        charge_sign=charge,
        temperature_K=chi.temperature_K,
    )
    if omega_c == 0.0:
        return res, chiral
    fp, fm = chiral.path_modes.frequencies, chiral.mesh_modes.frequencies
    lo, hi = float(min(fp.min(), fm.min())), float(max(fp.max(), fm.max()))
    sigma = cfg.mesh.smearing_meV or max(hi - lo, 1e-6 * max(abs(hi), 1.0)) / 100
    energies = np.linspace(lo - 4 * sigma, hi + 4 * sigma, cfg.mesh.n_energies)
    st = dict(chiral.stability)
    iq, mode = st["index"]
    st["index"] = (iq, mode)
    st["q"] = (res.q_path if st["where"] == "path" else res.q_mesh)[iq]
    res = dataclasses.replace(
        res,
        path_frequencies=fp,
        path_eigenvectors=chiral.path_modes.polarizations,
        mesh_frequencies=fm,
        mesh_eigenvectors=chiral.mesh_modes.polarizations,
        energies=energies,
        dos=dynamics.density_of_states(fm, energies, sigma),
        stability=st,
    )
    return res, chiral


def _chirality_outputs(chiral) -> tuple[dict, dict]:
    """Extra bands.csv columns (row order q-major, then mode) and arrays.npz entries."""
    columns = {
        "l_z": chiral.l_z.ravel(),
        "mu_z_muB": chiral.mu_z.ravel(),
        "berry_curvature": chiral.berry_curvature.ravel(),
        "degenerate": chiral.degenerate.ravel().astype(int),
    }
    bm = chiral.mesh_berry
    arrays = {
        "path_l_z_hbar": chiral.l_z,
        "path_mu_z_muB": chiral.mu_z,
        "path_berry_curvature_nm2": chiral.berry_curvature,
        "path_degenerate": chiral.degenerate,
        "mesh_l_z_hbar": chiral.mesh_l_z,
        "berry_q_centres": bm.q_centres,
        "berry_curvature_mesh_nm2": bm.berry_curvature,
        "hbar_omega_c_meV": np.array(chiral.omega_c),
    }
    return columns, arrays


def _plot_chirality(tmp: Path, cfg, res, chiral, distance, labels) -> None:
    """bands_l_z.png (bands coloured by l_z) and berry_curvature.png (Ω map of chirality.berry_band)."""
    if not cfg.output.plot:
        return
    from moire_cli import output
    from moire_cli.units import convert_frequency

    unit = cfg.output.frequency_unit
    cr = res.model.crystal
    b_field = cfg.chirality.magnetic_field_T
    fig = output.plot_bands_angular_momentum(
        distance,
        convert_frequency(res.path_frequencies, unit),
        chiral.l_z,
        labels,
        unit,
        title=f"{cr.name}, B = {b_field:g} T: phonon angular momentum",
    )
    output.save_figure(fig, tmp / "bands_l_z.png")
    bm = chiral.mesh_berry
    band = cfg.chirality.berry_band
    chern = next(g.chern for g in bm.groups if g.first <= band <= g.last)
    fig = output.plot_berry_curvature_map(
        bm.q_centres,
        bm.berry_curvature[..., band],
        cr.reciprocal,
        title=f"{cr.name}, B = {b_field:g} T: Ω of band {band} (Chern number of its group: {chern})",
    )
    output.save_figure(fig, tmp / "berry_curvature.png")


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


def _write_outputs(tmp: Path, cfg, res, distance, labels, summary, extra_columns=None, extra_arrays=None) -> None:
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
            **(extra_columns or {}),
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
        **(extra_arrays or {}),
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
    """The terminal summary: a rich table of ħω (and l_z when chiral) at the labelled points, then
    stability and chirality lines. On a TTY with colours; otherwise the same table in plain ASCII
    on stdout (readable in a log or a cron mail)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from moire_cli.units import convert_frequency

    unit = cfg.output.frequency_unit
    st = res.stability
    chi = summary["chirality"]
    show_l_z = chi["max_abs_l_z_hbar"] > 1e-6
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
_RELATIVE_MESSAGE = (
    "unpinned crystal (V = 0): the single-site ⟨u²⟩ diverges logarithmically at T > 0, so T_m uses the "
    "relative nearest-neighbour ratio L_rel = √(⟨|u_i − u_j|²⟩/2)/a (γ = ⟨|u_i − u_j|²⟩/a² = 2L_rel²); "
    "L(0) and quantum melting use the single-site ratio"
)


@app.command()
@user_errors
def melt(
    config: Path = typer.Argument(..., help="YAML config (see configs/moire/melt/)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config key: --set melt.lindemann_critical=0.2"),
    out: Path = typer.Option(Path("runs/melt"), "--out", help="Output folder (written atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Quantum and thermal melting (Lindemann criterion) of electronic and excitonic moiré crystals."""
    from rich.console import Console

    from moire_cli import lindemann, output
    from moire_cli.config import MeltConfig, load_config

    cfg = load_config(config, MeltConfig, set_)
    points = cfg.sweep_points()
    output.check_output_dir(out, overwrite)
    console = Console()
    models = [p.build_model() for _, p in points]
    harmonic = [w for p, m in zip(points, models, strict=True) if m.potential is not None
                and (w := m.potential.harmonic_warning(p[1].effective_mass))]
    warnings = []
    if harmonic:
        more = f" (and {len(harmonic) - 1} more sweep point(s))" if len(harmonic) > 1 else ""
        warnings.append(harmonic[0] + more)
    temps = cfg.melt.temperature_values()
    meshes = cfg.melt.mesh.sizes()
    _log(console, f"{models[0].crystal.name}: {len(points)} sweep point(s) × {len(temps)} temperatures, "
                  f"meshes {meshes}")
    res = lindemann.melt_sweep(
        models,
        [p.melt.lindemann_critical for _, p in points],
        temps,
        meshes,
        cfg.melt.mesh.tolerance,
        cfg.melt.relax,
        cfg.melt.t_max,
    )
    messages = []
    if not res.pinned.all():
        messages.append(_RELATIVE_MESSAGE)
    if len(meshes) > 1 and not res.mesh.converged:
        warnings.append(f"⟨u²⟩ not converged to {cfg.melt.mesh.tolerance:g} on the {res.mesh.mesh}×{res.mesh.mesh} "
                        f"mesh (last change {res.mesh.change:.2g}); raise melt.mesh.max")
    if res.unstable.any():
        warnings.append(f"{int(res.unstable.sum())} sweep point(s) dynamically unstable (imaginary phonons): no L, T_m")
    for line in messages + [f"warning: {w}" for w in warnings]:
        _log(console, line)
    summary = _melt_summary(cfg, points, res, messages, warnings)
    with output.atomic_output_dir(out, overwrite) as tmp:
        _write_melt_outputs(tmp, cfg, points, res, summary)
    _melt_report(console, points, res, out)


def _point_inputs(cfg) -> dict:
    """The physical inputs of one sweep point (melt.csv columns)."""
    pot = cfg.moire_potential
    inter = cfg.interaction
    r01, r02 = inter.screening_lengths() if inter.is_exciton else (np.nan, np.nan)
    return {
        "interaction": inter.kind,
        "a_M_nm": pot.a_M,
        "V_meV": pot.V if pot.hbar_omega_M is None else np.nan,
        "psi_deg": pot.psi_deg,
        "kappa": cfg.dielectric.kappa,
        "r0_nm": inter.r0 if inter.kind == "keldysh" else np.nan,
        "d_g_nm": inter.d_g if inter.kind == "dual-gate" else np.nan,
        "d_nm": inter.d if inter.is_exciton else np.nan,
        "r0_1_nm": r01,
        "r0_2_nm": r02,
        "mass_m0": cfg.effective_mass,
        "lindemann_critical": cfg.melt.lindemann_critical,
    }


def _blank_nan(values) -> list:
    """NaN -> '' (empty CSV cell); other values unchanged."""
    return ["" if isinstance(v, (float, np.floating)) and np.isnan(v) else v for v in values]


def _melt_rows(points, res, blank: bool = True) -> dict[str, list]:
    """melt.csv columns; NaN becomes '' (empty cell) when ``blank``, else stays (null in JSON)."""
    rows = [_point_inputs(p) for _, p in points]
    _blank = _blank_nan if blank else list
    cols: dict[str, list] = {"point": list(range(len(points)))}
    for key in points[0][0]:
        cols[f"sweep_{key}"] = [lab[key] for lab, _ in points]
    for key in rows[0]:
        cols[key] = _blank([r[key] for r in rows])
    cols["hbar_omega_M_meV"] = _blank(res.hbar_omega_M)
    cols["nearest_neighbour_distance_nm"] = list(res.nearest_neighbour_distance)
    cols["lindemann_ratio_zero"] = _blank(res.lindemann_ratio_zero)
    cols["melting_temperature_K"] = _blank(res.melting_temperature)
    cols["quantum_melted"] = [bool(v) for v in res.quantum_melted]
    cols["unstable"] = [bool(v) for v in res.unstable]
    cols["criterion"] = list(res.criterion)
    return cols


def _melt_summary(cfg, points, res, messages, warnings) -> dict:
    from moire_cli.output import provenance

    prov = provenance()
    rows = _melt_rows(points, res, blank=False)
    return {
        "command": "melt",
        "config": cfg.model_dump(mode="json"),
        "provenance": prov,
        "codata_year": prov["constants"]["codata_year"],
        "crystal": res.models[0].crystal.name,
        "sweep": cfg.sweep_values(),
        "n_points": len(points),
        "temperatures_K": res.temperatures,
        "mesh": {
            "sizes_tried": [n for n, _ in res.mesh.history],
            "reached": res.mesh.mesh,
            "last_change": res.mesh.change,
            "tolerance": cfg.melt.mesh.tolerance,
            "converged": res.mesh.converged,
            "history": [{"mesh": n, "change": c} for n, c in res.mesh.history],
        },
        "criterion": {"pinned": "single-site", "unpinned": "relative", "messages": messages},
        "points": [{k: v[i] for k, v in rows.items()} for i in range(len(points))],
        "warnings": warnings,
    }


def _write_melt_outputs(tmp: Path, cfg, points, res, summary) -> None:
    from moire_cli import output

    n_p, n_t = res.lindemann_ratio.shape
    output.write_csv(tmp / "melt.csv", _melt_rows(points, res))
    cols: dict[str, list] = {"point": np.repeat(np.arange(n_p), n_t)}
    for key in points[0][0]:
        cols[f"sweep_{key}"] = np.repeat(np.array([lab[key] for lab, _ in points], dtype=object), n_t)
    cols["temperature_K"] = np.tile(res.temperatures, n_p)
    cols["lindemann_ratio"] = _blank_nan(res.lindemann_ratio.ravel())
    cols["relative_lindemann_ratio"] = _blank_nan(res.relative_lindemann_ratio.ravel())
    output.write_csv(tmp / "lindemann.csv", cols)
    output.write_json(tmp / "summary.json", summary)
    if cfg.output.plot:
        for name, fig in _melt_figures(cfg, points, res):
            output.save_figure(fig, tmp / name)


def _melt_figures(cfg, points, res):
    """(file name, Figure) for lindemann.png, melting_temperature.png and phase_diagram.png."""
    from moire_cli import output

    labels = [", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in lab.items()) or "config"
              for lab, _ in points]
    crit = np.where(res.pinned[:, None], res.lindemann_ratio, res.relative_lindemann_ratio)
    name = res.models[0].crystal.name
    yield "lindemann.png", output.plot_lindemann(res.temperatures, crit, res.lindemann_critical, labels,
                                                  title=f"{name}: Lindemann ratio (single-site pinned, relative free)")
    values = cfg.sweep_values()
    numeric = [k for k, v in values.items() if all(isinstance(x, (int, float)) for x in v)]
    xkey = "a_M" if "a_M" in numeric else (numeric[0] if numeric else None)
    x = [p.moire_potential.a_M for _, p in points] if xkey in (None, "a_M") else [lab[xkey] for lab, _ in points]
    others = [k for k in values if k != xkey and k != "interaction"]
    groups = [p.interaction.kind + "".join(f", {k}={lab[k]}" for k in others) for lab, p in points]
    yield "melting_temperature.png", output.plot_melting_temperature(
        x, res.melting_temperature, res.quantum_melted, groups, _axis_label(xkey or "a_M"),
        title=f"{name}: melting temperature")
    yield "phase_diagram.png", output.plot_phase_diagram(_phase_panels(cfg, points, res, numeric),
                                                          title=f"{name}: phase diagram")


def _axis_label(key: str) -> str:
    units = {"a_M": "a_M (nm)", "V": "V (meV)", "psi_deg": "ψ (deg)", "epsilon": "ε", "kappa": "κ",
             "r0": "r₀ (nm)", "r0_1": "r₀₁ (nm)", "r0_2": "r₀₂ (nm)", "d": "d (nm)", "d_g": "d_g (nm)",
             "lindemann_critical": "L_c", "mass": "m (m₀)", "hbar_omega_M": "ħω_M (meV)"}
    return units.get(key, key)


def _phase_panels(cfg, points, res, numeric):
    """Panels per interaction model: over the first two swept numeric parameters at the phase
    temperature, or over (parameter, T) with one, or (sweep point, T) with none."""
    temps = res.temperatures
    t_phase = cfg.output.phase_temperature
    if t_phase is None:
        t_phase = float(temps[len(temps) // 2])
    panels = []
    for kind in dict.fromkeys(p.interaction.kind for _, p in points):
        sel = [i for i, (_, p) in enumerate(points) if p.interaction.kind == kind]
        if len(numeric) >= 2:
            kx, ky = numeric[:2]
            fixed = {k: points[sel[0]][0][k] for k in points[0][0] if k not in (kx, ky, "interaction")}
            sel = [i for i in sel if all(points[i][0][k] == v for k, v in fixed.items())]
            xs = sorted({points[i][0][kx] for i in sel})
            ys = sorted({points[i][0][ky] for i in sel})
            phase = np.full((len(ys), len(xs)), 3.0)
            for i in sel:
                phase[ys.index(points[i][0][ky]), xs.index(points[i][0][kx])] = _phase_of(res, i, t_phase)
            note = "".join(f", {k}={v}" for k, v in fixed.items())
            panels.append((f"{kind}, T = {t_phase:g} K{note}", xs, ys, phase, _axis_label(kx), _axis_label(ky)))
        else:
            if numeric:
                key = numeric[0]
                xs_raw = [points[i][0][key] for i in sel]
                label = _axis_label(key)
            else:
                xs_raw, label = list(range(len(sel))), "sweep point"
            order = np.argsort(xs_raw)
            phase = np.array([[_phase_of(res, sel[j], t) for j in order] for t in temps])
            panels.append((kind, np.asarray(xs_raw, float)[order], temps, phase, label, "T (K)"))
    return panels


def _phase_of(res, i: int, t: float) -> int:
    """Index into output.PHASES for sweep point i at temperature t."""
    if res.unstable[i]:
        return 3
    if res.quantum_melted[i]:
        return 2
    return 0 if t < res.melting_temperature[i] else 1


def _melt_report(console, points, res, out: Path) -> None:
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="moire")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
