"""`moire phonons` as one core call: config in, :class:`PhononRun` out (no file I/O, no printing).

Steps: build the lattice model → band path and Monkhorst–Pack mesh → relax + bands + DOS +
stability (:func:`moire_cli.dynamics.compute_phonons`) → chiral phonons (:mod:`moire_cli.chirality`;
under B ≠ 0 the reported bands, DOS and stability become those of the gyroscopic problem) → the
``summary.json`` digest. Writing is :func:`moire_cli.phonon_output.write_phonons`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moire_cli import chirality, crystals, dynamics, gyroscopic
from moire_cli.band_path import BandPath, band_path
from moire_cli.config import ConfigError, PhononsConfig


@dataclass(frozen=True, eq=False)
class PhononRun:
    """Everything `moire phonons` computed for one config.

    Attributes:
        config: the validated config.
        model: the lattice model as configured (before relaxation); ``result.model`` is the relaxed one.
        result: bands (N_path, 2n), mesh modes, DOS and stability (meV); under B ≠ 0 those of the
            gyroscopic problem, eigenvectors then the unit polarizations of the physical modes.
        chiral: l_z, μ_z, Berry curvature, Chern numbers, thermal totals.
        path: the band path (q, distance, labels, pieces between breaks).
        warnings: lines for the user (harmonic expansion marginal, saddle point).
        summary: the JSON-ready digest written as summary.json.
        generation: the opted-in chiral-phonon generation steps (optics, anharmonic decay, thermal
            Hall; :mod:`moire_cli.chiral_generation`), None when no such section is configured.
    """

    config: PhononsConfig
    model: dynamics.LatticeModel
    result: dynamics.PhononResult
    chiral: chirality.ChiralPhonons
    path: BandPath
    warnings: list[str]
    summary: dict
    generation: object | None = None


def run_phonons(cfg: PhononsConfig, log: Callable[[str], None] | None = None) -> PhononRun:
    """Phonon bands, DOS, stability and chiral-phonon quantities for one config (spec §5–6).

    Args:
        cfg: a validated :class:`PhononsConfig`.
        log: optional progress callback (one line per call); the core prints nothing itself.

    Raises:
        ConfigError: a path label this cell does not have.
    """
    model = cfg.build_model()
    warnings = []
    if model.potential is not None and (w := model.potential.harmonic_warning(cfg.mass)):
        warnings.append(w)
    cr = model.crystal
    try:
        path = band_path(cr, cfg.path.spec(), cfg.path.n_per_segment)
    except ValueError as err:  # a label this cell does not have
        raise ConfigError(f"config: path.points: {err}") from None
    q_path, labels = path.q, path.labels
    q_mesh = crystals.monkhorst_pack(cr, cfg.mesh.size)
    if log is not None:
        log(f"{cr.name}: {cr.n_sites} site(s)/cell, {len(q_path)} path + {len(q_mesh)} mesh q-points")
    res = dynamics.compute_phonons(model, q_path, q_mesh, cfg.relax, cfg.mesh.smearing_meV, cfg.mesh.n_energies)
    res, chiral = _chirality(cfg, res)
    if res.relax is not None and not res.relax.hessian_psd:
        warnings.append(
            f"the q = 0 Hessian at the relaxed positions is not positive semidefinite "
            f"(lowest eigenvalue {res.relax.min_hessian_eigenvalue:.3g} meV/nm²): a saddle point"
        )
    summary = phonons_summary(cfg, model, res, chiral, labels, warnings)
    from moire_cli.chiral_generation import run_chiral_generation

    generation = run_chiral_generation(cfg, res, chiral, chiral.omega_c)
    if generation is not None:
        summary.update(generation.summary)
    return PhononRun(cfg, model, res, chiral, path, warnings, summary, generation)


def _chirality(cfg: PhononsConfig, res: dynamics.PhononResult):
    """Chiral phonons of the relaxed crystal (spec §6). Under B ≠ 0 the reported bands, DOS and
    stability become those of the gyroscopic problem (all ω real = stable)."""
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


def phonons_summary(cfg: PhononsConfig, model, res: dynamics.PhononResult, chiral, labels, warnings) -> dict:
    """The summary.json digest: config, provenance, crystal, potential, relaxation, frequencies at
    the labelled points, stability, Chern numbers and the chirality block (spec §5–6)."""
    from moire_cli.output import provenance

    cr0, cr = model.crystal, res.model.crystal
    st = res.stability
    pot = model.potential
    nm = res.path_frequencies.shape[1]
    at_labels = {}
    for i, lab in labels:
        at_labels.setdefault(lab, {"q_frac": cr.to_fractional(res.q_path[i]), "frequencies_meV": res.path_frequencies[i]})
    disp = res.relax.displacement if res.relax is not None else np.zeros_like(cr.basis)
    prov = provenance()
    chiral_summary = chiral.summary()
    summary = {
        "command": "phonons",
        "config": cfg.model_dump(mode="json"),
        "provenance": prov,
        "codata_year": prov["constants"]["codata_year"],
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
        "chern_numbers": chiral_summary["chern_numbers"],
        "chirality": {"magnetic_field_T": cfg.chirality.magnetic_field_T, **chiral_summary},
    }
    chiral_at = summary["chirality"]["at_labels"] = {}
    for i, lab in labels:
        chiral_at.setdefault(
            lab,
            {
                "l_z_hbar": chiral.l_z[i] + 0.0,
                "mu_z_muB": chiral.mu_z[i] + 0.0,
                "berry_curvature_nm2": chiral.berry_curvature[i] + 0.0,
                "degenerate": chiral.degenerate[i],
            },
        )
    return summary
