"""The files of `moire phonons`: one writer for a :class:`moire_cli.phonon_run.PhononRun`.

bands.csv (one row per path q-point and mode, with l_z, μ_z, Ω, degenerate), dos.csv, arrays.npz,
summary.json, band.yaml (phonopy's layout, :mod:`moire_cli.band_yaml`) and, with ``output.plot``, bands.png, and for chiral runs (B ≠ 0 or inversion broken,
``ChiralPhonons.is_chiral``) bands_l_z.png and berry_curvature.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moire_cli import output, plots
from moire_cli.band_yaml import band_yaml_text
from moire_cli.phonon_run import PhononRun
from moire_cli.units import convert_frequency


def write_phonons(folder: Path, run: PhononRun) -> None:
    """Write every output file of ``run`` into ``folder`` (an existing, empty folder, e.g. the
    temporary one of :func:`moire_cli.output.atomic_output_dir`)."""
    folder = Path(folder)
    cfg, res, chiral, path = run.config, run.result, run.chiral, run.path
    unit = cfg.output.frequency_unit
    cr = res.model.crystal
    n_q, n_m = res.path_frequencies.shape
    label_of = dict(path.labels)
    frac = cr.to_fractional(res.q_path)
    rep = np.repeat
    output.write_csv(
        folder / "bands.csv",
        {
            "distance": rep(path.distance, n_m),
            "label": rep([label_of.get(i, "") for i in range(n_q)], n_m),
            "q_x": rep(res.q_path[:, 0], n_m),
            "q_y": rep(res.q_path[:, 1], n_m),
            "q_frac_1": rep(frac[:, 0], n_m),
            "q_frac_2": rep(frac[:, 1], n_m),
            "mode": np.tile(np.arange(n_m), n_q),
            f"frequency_{unit}": convert_frequency(res.path_frequencies, unit).ravel(),
            "l_z": chiral.l_z.ravel(),
            "mu_z_muB": chiral.mu_z.ravel(),
            "berry_curvature": chiral.berry_curvature.ravel(),
            "degenerate": chiral.degenerate.ravel().astype(int),
        },
    )
    factor = float(convert_frequency(1.0, unit))
    output.write_csv(folder / "dos.csv", {f"energy_{unit}": res.energies * factor, f"dos_per_{unit}": res.dos / factor})
    bm = chiral.mesh_berry
    output.write_npz(
        folder / "arrays.npz",
        q_path=res.q_path,
        path_distance=path.distance,
        path_frequencies_meV=res.path_frequencies,
        path_eigenvectors=res.path_eigenvectors,
        label_index=np.array([i for i, _ in path.labels]),
        label=np.array([lab for _, lab in path.labels]),
        q_mesh=res.q_mesh,
        mesh_frequencies_meV=res.mesh_frequencies,
        mesh_eigenvectors=res.mesh_eigenvectors,
        dos_energies_meV=res.energies,
        dos_per_meV=res.dos,
        cell=cr.cell,
        basis=cr.basis,
        path_l_z_hbar=chiral.l_z,
        path_mu_z_muB=chiral.mu_z,
        path_berry_curvature_nm2=chiral.berry_curvature,
        path_degenerate=chiral.degenerate,
        mesh_l_z_hbar=chiral.mesh_l_z,
        berry_q_centres=bm.q_centres,
        berry_curvature_mesh_nm2=bm.berry_curvature,
        hbar_omega_c_meV=np.array(chiral.omega_c),
    )
    output.write_json(folder / "summary.json", run.summary)
    output.write_text(
        folder / "band.yaml",
        band_yaml_text(path, cr, res.path_frequencies, cfg.mass,
                       comment={"calculator": "moire", "length_unit": "nm", "frequency_unit": "THz"},
                       eigenvectors=res.path_eigenvectors),
    )
    if run.generation is not None:
        from moire_cli.chiral_generation_output import write_chiral_generation

        write_chiral_generation(folder, run.generation, cfg.output.plot, f"{cr.name}, B = {cfg.chirality.magnetic_field_T:g} T")
    if cfg.output.plot:
        for name, fig in phonon_figures(run):
            output.save_figure(fig, folder / name)


def phonon_figures(run: PhononRun):
    """(file name, Figure) for bands.png and, when the run is chiral, bands_l_z.png and berry_curvature.png."""
    cfg, res, chiral, path = run.config, run.result, run.chiral, run.path
    unit = cfg.output.frequency_unit
    cr = res.model.crystal
    factor = float(convert_frequency(1.0, unit))
    freqs = convert_frequency(res.path_frequencies, unit)
    yield "bands.png", plots.plot_bands_dos(
        path.distance,
        freqs,
        path.tick_labels(),
        res.energies * factor,
        res.dos / factor,
        unit,
        title=f"{cr.name}, {cfg.interaction.kind}, a_M = {cfg.moire_potential.a_M:g} nm",
        pieces=path.pieces,
    )
    if not chiral.is_chiral:  # B = 0 with inversion intact: l_z ≡ 0 and Ω ≡ 0, nothing to show
        return
    b_field = cfg.chirality.magnetic_field_T
    yield "bands_l_z.png", plots.plot_bands_angular_momentum(
        path.distance,
        freqs,
        chiral.l_z,
        path.tick_labels(),
        unit,
        title=f"{cr.name}, B = {b_field:g} T: phonon angular momentum",
        pieces=path.pieces,
    )
    bm = chiral.mesh_berry
    band = cfg.chirality.berry_band
    chern = next(g.chern for g in bm.groups if g.first <= band <= g.last)
    yield "berry_curvature.png", plots.plot_berry_curvature_map(
        bm.q_centres,
        bm.berry_curvature[..., band],
        cr.reciprocal,
        title=f"{cr.name}, B = {b_field:g} T: Ω of band {band} (Chern number of its group: {chern})",
    )
