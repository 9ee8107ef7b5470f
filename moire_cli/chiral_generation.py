"""The seed's chiral-phonon mechanism end to end, as one core call of `moire phonons` (issue 13):
optical activity of the Γ phonons (:mod:`moire_cli.optics`), their three-phonon decay into chiral
phonons (:mod:`moire_cli.anharmonic`) and the phonon thermal Hall conductivity
(:mod:`moire_cli.thermal_hall`). Each step runs only when its config section is given
(``optics``, ``anharmonic_decay``, ``thermal_hall``), so plain runs stay as fast as before.
Pure: no file I/O, no printing; writing is :mod:`moire_cli.chiral_generation_output`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moire_cli import anharmonic, crystals, dynamics, gyroscopic, optics, thermal_hall, topology
from moire_cli.config import MAX_MESH_WORK, ConfigError, PhononsConfig


@dataclass(frozen=True, eq=False)
class ChiralGeneration:
    """Results of the opted-in steps (None where a step was not asked for).

    Attributes:
        optics: :class:`optics.GammaOptics` (also computed when only the decay is asked for).
        energies_meV, absorption: (N_E,) photon energies and {polarisation: (N_E,)} spectra (1/meV).
        decay: :class:`anharmonic.DecayResult` of every Γ mode.
        decay_mesh: (N1, N2) of the decay.
        thermal_hall: :class:`thermal_hall.ThermalHall`.
        summary: {"optics": …, "anharmonic_decay": …, "thermal_hall": …} for summary.json.
        reciprocal: (2, 2) rows b1, b2 of the crystal (1/nm).
    """

    optics: optics.GammaOptics | None
    energies_meV: np.ndarray | None
    absorption: dict | None
    decay: anharmonic.DecayResult | None
    decay_mesh: tuple[int, int] | None
    thermal_hall: thermal_hall.ThermalHall | None
    summary: dict
    reciprocal: np.ndarray


def _pump_statistics(decay: anharmonic.DecayResult, mode: int, t: int = 0) -> dict:
    """Where the products of Γ mode ``mode`` go: valley shares, l_z sign per valley, l_z per decay."""
    rate = float(decay.rates[t, mode])
    prod = decay.product_rates[t, mode]  # (3 valleys, 2 signs)
    out = {"gamma_mode": int(mode), "frequency_meV": float(decay.frequencies[mode]), "rate_meV": rate}
    if rate <= 0:
        out["note"] = "no allowed decay: energy conservation cannot be met on this mesh"
        return out
    tot = prod.sum()
    out["product_share"] = {v: float(prod[i].sum() / tot) for i, v in enumerate(anharmonic.VALLEYS)}
    out["product_share_by_l_z_sign"] = {
        v: {"l_z>=0": float(prod[i, 0] / tot), "l_z<0": float(prod[i, 1] / tot)} for i, v in enumerate(anharmonic.VALLEYS)
    }
    kp, kn = prod[1], prod[2]
    with np.errstate(invalid="ignore"):
        pos = (kp[0] - kn[0]) / (kp[0] + kn[0])
        neg = (kp[1] - kn[1]) / (kp[1] + kn[1])
    out["valley_polarization_of_l_z>=0_products"] = float(np.nan_to_num(pos))
    out["valley_polarization_of_l_z<0_products"] = float(np.nan_to_num(neg))
    lz = decay.angular_momentum[t, mode] / rate
    out["l_z_per_decay_by_valley_hbar"] = {v: float(lz[i]) for i, v in enumerate(anharmonic.VALLEYS)}
    out["l_z_per_decay_hbar"] = float(lz.sum())
    if decay.berry_curvature is not None:
        bc = decay.berry_curvature[t, mode] / rate
        out["berry_curvature_per_decay_by_valley_nm2"] = {v: float(bc[i]) for i, v in enumerate(anharmonic.VALLEYS)}
    return out


def _selectivity(o: optics.GammaOptics, decay: anharmonic.DecayResult, t: int = 0) -> dict:
    """What a broadband σ+ or σ− pump makes: each Γ line p is excited ∝ f_p(σ) and decays with Γ_p.

    Per absorbed photon: ``decaying_fraction`` = Σ_{p: Γ_p > 0} f_p / Σ_p f_p, and the l_z delivered to
    each valley, L_v(σ) = Σ_p f_p ℓ_{v,p} / Σ_p f_p (ℓ_{v,p} the l_z per decay of line p in valley v, 0 for
    lines that cannot decay). ``helicity_selectivity_K`` = (L_K(σ+) − L_K(σ−)) / (|L_K(σ+)| + |L_K(σ−)|):
    ±1 when the pump helicity fixes the chirality delivered to K, 0 when it does not.
    """
    rate = decay.rates[t]
    ok = rate > 0
    ell = np.where(ok[:, None], decay.angular_momentum[t] / np.where(ok, rate, 1.0)[:, None], 0.0)  # (P, 3)
    out = {}
    for pol in ("sigma+", "sigma-"):
        f = o.oscillator_strengths[pol]
        lines = [_pump_statistics(decay, int(p), t) | {"oscillator_strength": float(f[p])} for p in np.argsort(-f) if f[p] > 1e-6]
        lv = f @ ell / f.sum()
        out[pol] = {
            "decaying_fraction": float(f[ok].sum() / f.sum()),
            "l_z_per_absorbed_photon_by_valley_hbar": {v: float(lv[i]) for i, v in enumerate(anharmonic.VALLEYS)},
            "lines": lines,
        }
    lk = [out[p]["l_z_per_absorbed_photon_by_valley_hbar"]["K"] for p in ("sigma+", "sigma-")]
    den = abs(lk[0]) + abs(lk[1])
    out["helicity_selectivity_K"] = float((lk[0] - lk[1]) / den) if den > 0 else 0.0
    return out


def run_chiral_generation(cfg: PhononsConfig, res: dynamics.PhononResult, chiral, omega_c: float) -> ChiralGeneration | None:
    """The opted-in steps for a relaxed crystal (``res.model``) with its chirality results.

    Args:
        cfg: validated config; ``optics``, ``anharmonic_decay``, ``thermal_hall`` select the steps.
        res: :func:`dynamics.compute_phonons` result (relaxed model, mesh).
        chiral: :class:`moire_cli.chirality.ChiralPhonons` (mesh modes and Berry curvature reused).
        omega_c: signed ħω_c (meV).

    Returns:
        :class:`ChiralGeneration`, or None when no section is given.

    Raises:
        ConfigError: a step whose physics is undefined for this input (unstable Γ or mesh modes, a Berry
        curvature the mesh does not resolve, a mesh over the work limit), in one line.
    """
    if cfg.optics is None and cfg.anharmonic_decay is None and cfg.thermal_hall is None:
        return None
    model = res.model
    charge = cfg.chirality.carrier_charge(cfg.moire_potential.carrier)
    summary: dict = {}
    o = energies = spectra = decay = th = None
    mesh = None
    if cfg.optics is not None or cfg.anharmonic_decay is not None:
        try:
            o = optics.gamma_optics(
                dynamics.dynamical_matrix(model, np.zeros((1, 2))), omega_c=omega_c, mass=cfg.mass, charge_sign=charge
            )
        except ValueError as err:
            raise ConfigError(f"optics: {err}") from None
        if (oc := cfg.optics) is not None:
            lo, hi = oc.energy_range_meV or (
                max(0.0, float(o.frequencies.min()) - 10 * oc.broadening_meV),
                float(o.frequencies.max()) + 10 * oc.broadening_meV,
            )
            energies = np.linspace(lo, hi, oc.n_energies)
            spectra = o.absorption(energies, oc.broadening_meV)
            summary["optics"] = {**o.summary(), "broadening_meV": oc.broadening_meV}
    if cfg.anharmonic_decay is not None:
        ad = cfg.anharmonic_decay
        mesh = tuple(ad.mesh)
        if mesh[0] * mesh[1] * model.crystal.n_sites**3 > MAX_MESH_WORK:
            raise ConfigError(f"anharmonic_decay.mesh {mesh[0]}×{mesh[1]} is too large for {model.crystal.n_sites} sites")
        q = crystals.monkhorst_pack(model.crystal, mesh)
        try:
            decay = anharmonic.three_phonon_decay(
                model,
                q,
                o.frequencies,
                o.displacements,
                omega_c=omega_c,
                temperatures_K=np.asarray(ad.temperatures_K),
                sigma_meV=ad.sigma_meV,
                berry=ad.berry_curvature,
            )
        except ValueError as err:
            raise ConfigError(f"anharmonic_decay: {err}") from None
        summary["anharmonic_decay"] = {
            **decay.summary(),
            "mesh": list(mesh),
            "pumps": _selectivity(o, decay) if model.crystal.is_hexagonal else None,
        }
    if cfg.thermal_hall is not None:
        tc = cfg.thermal_hall
        cr = model.crystal
        if tc.mesh is None or tuple(tc.mesh) == tuple(cfg.mesh.size):
            modes, berry = chiral.mesh_modes, chiral.mesh_berry
        else:
            if tc.mesh[0] * tc.mesh[1] * cr.n_sites**2 > MAX_MESH_WORK:
                raise ConfigError(f"thermal_hall.mesh {tc.mesh[0]}×{tc.mesh[1]} is too large for {cr.n_sites} sites")
            qm = crystals.monkhorst_pack(cr, tc.mesh)
            modes = gyroscopic.gyroscopic_modes(dynamics.dynamical_matrix(model, qm), omega_c)
            berry = topology.berry_curvature_mesh(modes, qm, tuple(tc.mesh), cr.basis, cr.reciprocal)
        note = "Qin, Zhou & Shi (2012) weight c2 on the FHS Berry curvature of the mesh"
        if omega_c == 0.0 and np.isnan(berry.berry_curvature).any():
            # time reversal: Ω(−k) = −Ω(k) band by band, so κ_xy = 0 exactly; plaquettes the mesh does
            # not resolve (near the K/K′ gaps) cancel in pairs and need not be resolved.
            t = tc.values()
            zero = np.zeros_like(t)
            n_b = berry.berry_curvature.shape[-1]
            th = thermal_hall.ThermalHall(t, zero, zero.copy(), np.zeros((len(t), n_b)), 0.0, 0.0, tuple(berry.mesh))
            note = "B = 0: κ_xy = 0 by time reversal (Ω(−k) = −Ω(k)); the mesh leaves some plaquettes unresolved"
        else:
            try:
                th = thermal_hall.thermal_hall_from_modes(modes, berry, cr.reciprocal, tc.values())
            except ValueError as err:
                raise ConfigError(f"thermal_hall: {err}") from None
        summary["thermal_hall"] = {**th.summary(), "magnetic_field_T": cfg.chirality.magnetic_field_T, "method": note}
    return ChiralGeneration(o, energies, spectra, decay, mesh, th, summary, model.crystal.reciprocal)
