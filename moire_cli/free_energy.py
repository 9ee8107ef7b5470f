"""Free energies of the unpinned classical 2D Coulomb crystal and fluid on one periodic supercell, and
melting where they cross (the thermodynamic estimator of Gann, Chakravarty & Chester, PRB 20, 326
(1979); Morf, PRL 43, 931 (1979)).

Reduced units: a = (πn)^{-1/2} (the Wigner–Seitz radius), energies in e²/(κa), Γ = e²/(κa k_BT).
ũ = ⟨U⟩/(N e²/(κa)) is the Monte Carlo energy per particle; d(βF/N)/dΓ = ũ at fixed N and area
A = Nπa². Both phases are the same N particles in the same box, with `montecarlo.PeriodicPairEnergy`
(whose dropped constants are the same for every configuration), so the finite-N free energies compare
directly:

- Energies: ũ = e_M + (E − E_ideal)/(N e²/κa), e_M = −1.106103 the Madelung energy of the triangular
  crystal (Bonsall & Maradudin, PRB 15, 1959 (1977)); `montecarlo` reports E − E_ideal per particle.
- Fluid (thermodynamic integration from the ideal gas, Γ = 0):
      βF_fl/N = −ln A + ln(N!)/N + ∫₀^Γ ũ_fl dΓ'.
  At Γ = 0 the configurations are uniform and ũ(0) is closed-form: the periodic pair energy has the
  uniform mean 2√π C/(Aη) (its erfc part; the reciprocal part has zero mean), so
      ũ(0) = e_M + [(N − 1)/2 · 2√π C/(Aη) − E_ideal/N] / (e²/κa),
  which for an L×L triangular supercell equals e_M/L, the Madelung energy of one particle in the box
  lattice (tested).
- Crystal (exact harmonic free energy of the supercell, anharmonic part from the Monte Carlo):
      βF_cr/N = Γe_M − ln(NA)/N + ((N − 1)/N) ln(Γ/2π) + (1/2N) Σ′_s ln κ̃_s + βf_anh(Γ),
  κ̃_s the 2N − 2 non-zero eigenvalues of the supercell's force-constant matrix in e²/(κa³) (the
  L×L Monkhorst–Pack q-mesh of `dynamics.hessian_matrix`), the centre-of-mass integral giving NA.
  βu_anh = Γ(ũ_cr − e_M) − (N − 1)/N is fitted by Σ_k c_k Γ^{-k} (k = 1…K) and
      βf_anh(Γ) = −∫_Γ^∞ βu_anh(Γ')/Γ' dΓ' = −Σ_k c_k Γ^{-k}/k.
- Γ_m: Δ(Γ) = βF_fl/N − βF_cr/N = 0 (the fluid is lower below Γ_m).

Units: dimensionless unless stated; temperatures in K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.interpolate import CubicSpline
from scipy.special import gammaln

from moire_cli.units import K_B_MEV_PER_K

#: Madelung energy of the triangular crystal per particle, e²/(κa), a = (πn)^{-1/2} (Bonsall & Maradudin 1977).
E_MADELUNG = -1.106103


def energy_unit(model) -> tuple[float, float]:
    """(e²/(κa) meV, a nm) with a = (πn)^{-1/2}. Raises ValueError without a Coulomb tail or with a
    moiré potential (the anchor is the unpinned crystal)."""
    c = float(getattr(model.interaction, "coulomb_tail", 0.0))
    if not c or model.potential is not None or model.crystal.n_sites != 1:
        raise ValueError("the free energies are for the unpinned (V = 0) triangular Coulomb crystal")
    a = 1.0 / np.sqrt(np.pi * model.crystal.density)
    return c / a, a


def temperature(model, gamma) -> np.ndarray:
    """T (K) of Γ = e²/(κa k_BT)."""
    e0, _ = energy_unit(model)
    return e0 / (K_B_MEV_PER_K * np.asarray(gamma, dtype=float))


def harmonic_log_spectrum(model, size: tuple[int, int]) -> float:
    """(1/2N) Σ′_s ln κ̃_s over the 2N − 2 non-zero force-constant eigenvalues of the L1×L2 supercell
    (κ̃ in e²/(κa³)). Raises ValueError if the crystal is not stable (a non-positive mode)."""
    from moire_cli import crystals, dynamics

    e0, a = energy_unit(model)
    q = crystals.monkhorst_pack(model.crystal, size)
    k = np.sort(np.linalg.eigvalsh(dynamics.hessian_matrix(model, q)).ravel()) * a**2 / e0
    n = len(k) // 2
    if np.any(np.abs(k[:2]) > 1e-8 * k[-1]) or k[2] <= 0:
        raise ValueError("the supercell's crystal has modes other than the two translations at or below zero")
    return float(np.log(k[2:]).sum() / (2 * n))


def ideal_gas_energy(model, size: tuple[int, int]) -> float:
    """ũ(Γ = 0): the mean energy per particle of uniform configurations (closed form, module docstring)."""
    from moire_cli import montecarlo as mc

    e0, _ = energy_unit(model)
    sc = mc.build_supercell(model.crystal, size)
    pair = mc.PeriodicPairEnergy(model.interaction, sc)
    d = sc.minimum_image(sc.sites[1:] - sc.sites[0])
    e_ideal = 0.5 * pair(d).sum()  # per particle
    area = abs(np.linalg.det(sc.box))
    mean_phi = 2 * np.sqrt(np.pi) * model.interaction.coulomb_tail / (area * pair.eta)
    return E_MADELUNG + (0.5 * (sc.n - 1) * mean_phi - e_ideal) / e0


def crystal_free_energy(gamma, n: int, log_spectrum: float, anharmonic=()) -> np.ndarray:
    """βF_cr/N at Γ (module docstring); ``anharmonic`` the coefficients c_1…c_K of βu_anh."""
    g = np.asarray(gamma, dtype=float)
    area = n * np.pi
    f = g * E_MADELUNG - np.log(n * area) / n + (n - 1) / n * np.log(g / (2 * np.pi)) + log_spectrum
    for k, c in enumerate(anharmonic, start=1):
        f = f - c * g ** (-k) / k
    return f


def fit_anharmonic(gamma, beta_u_anh, err, order: int = 2) -> tuple[np.ndarray, float]:
    """Weighted least squares βu_anh = Σ_{k=1}^{order} c_k Γ^{-k}; returns (c, χ²/dof)."""
    g, y, s = (np.asarray(v, dtype=float) for v in (gamma, beta_u_anh, err))
    a = np.stack([g ** (-k) for k in range(1, order + 1)], axis=1) / s[:, None]
    c, *_ = np.linalg.lstsq(a, y / s, rcond=None)
    dof = max(len(g) - order, 1)
    return c, float(((a @ c - y / s) ** 2).sum() / dof)


class FluidIntegral:
    """∫₀^Γ ũ dΓ' through nodes (Γ_0 = 0, ũ(0)), (Γ_i, ũ_i): a cubic spline of (1 + Γ)(ũ − e_M) in
    x = ln(1 + Γ), integrated exactly (smooth at both ends: ũ − e_M is finite at 0 and ~ 1/Γ at large Γ).
    Valid on [0, max Γ_i]; ValueError beyond."""

    def __init__(self, gamma, u, u0: float):
        g = np.concatenate([[0.0], np.asarray(gamma, dtype=float)])
        u = np.concatenate([[u0], np.asarray(u, dtype=float)])
        order = np.argsort(g)
        g, u = g[order], u[order]
        self.gamma_max = float(g[-1])
        self._spline = CubicSpline(np.log1p(g), (1 + g) * (u - E_MADELUNG), bc_type="not-a-knot")

    def __call__(self, gamma) -> np.ndarray:
        g = np.asarray(gamma, dtype=float)
        if np.any(g > self.gamma_max * (1 + 1e-12)) or np.any(g < 0):
            raise ValueError(f"the fluid integral is known on [0, {self.gamma_max}] only")
        out = np.vectorize(lambda x: self._spline.integrate(0.0, x))(np.log1p(g))
        return g * E_MADELUNG + out


def fluid_free_energy(gamma, n: int, integral: FluidIntegral) -> np.ndarray:
    """βF_fl/N = −ln A + ln(N!)/N + ∫₀^Γ ũ dΓ' (A = Nπ in a²)."""
    return -np.log(n * np.pi) + gammaln(n + 1) / n + integral(gamma)


@dataclass(frozen=True)
class MeltingEstimate:
    """Γ_m from the free-energy crossing with its bootstrap error, and what else the runs show."""

    n: int
    gamma_m: float
    gamma_m_err: float
    gamma_m_samples: np.ndarray
    quadrature_shift: float
    anharmonic: np.ndarray
    chi2: float
    fluid: dict
    crystal: dict
    latent_heat: float
    sweeps: tuple[int, int]
    wall_s: float


def _replica_means(run: dict, psi6_threshold: float, keep: str):
    """Per replica: Γ, mean energy (meV per particle, relative to the ideal crystal), Ψ₆ of the last
    half, γ_rel, and whether it stayed in its phase (Ψ₆ of the last half above/below the threshold)."""
    e = run["energy_blocks"]
    half = e.shape[1] // 2
    psi_late = run["psi6_blocks"][:, half:].mean(axis=1)
    ok = psi_late >= psi6_threshold if keep == "crystal" else psi_late < psi6_threshold
    return run["gamma"], e[:, half:].mean(axis=1), psi_late, run["rel_blocks"].mean(axis=1), ok


def melting_from_runs(model, size, fluid: dict, crystal: dict, bootstrap: int = 200, seed: int = 0,
                      psi6_threshold: float = 0.45, order: int = 2) -> MeltingEstimate:
    """Γ_m from Monte Carlo runs (the dicts `bench/bench_melting_anchor.py` saves: per replica
    ``gamma``, ``energy_blocks`` (R, B) meV, ``psi6_blocks`` (R, B), ``rel_blocks``). The second half
    of the blocks is used; replicas that left their phase (Ψ₆ test) are left out of its branch.
    Error by a bootstrap over the replicas at every Γ. Raises ValueError if the branches do not cross
    where both are known."""
    e0, _ = energy_unit(model)
    n = int(size[0] * size[1])
    log_spec = harmonic_log_spectrum(model, size)
    u0 = ideal_gas_energy(model, size)
    gf, ef, pf, rf, okf = _replica_means(fluid, psi6_threshold, "fluid")
    gc, ec, pc, rc, okc = _replica_means(crystal, psi6_threshold, "crystal")
    rng = np.random.default_rng(seed)

    def branch(g, e, ok, resample):
        nodes, means, errs = [], [], []
        for x in np.unique(g):
            v = e[(g == x) & ok]
            if len(v) < 2:
                continue
            if resample:
                v = rng.choice(v, len(v))
            nodes.append(x)
            means.append(E_MADELUNG + v.mean() / e0)
            errs.append(v.std(ddof=1) / np.sqrt(len(v)) / e0)
        return np.array(nodes), np.array(means), np.array(errs)

    def estimate(resample: bool, thin: bool = False):
        g1, u1, _ = branch(gf, ef, okf, resample)
        if thin:  # quadrature check: every other interior node
            keep = np.ones(len(g1), bool)
            keep[1:-1:2] = False
            g1, u1 = g1[keep], u1[keep]
        g2, u2, s2 = branch(gc, ec, okc, resample)
        anh = g2 * (u2 - E_MADELUNG) - (n - 1) / n
        coef, chi2 = fit_anharmonic(g2, anh, np.maximum(g2 * s2, 1e-12), order)
        integral = FluidIntegral(g1, u1, u0)
        lo, hi = max(g2.min(), 1.0), min(g1.max(), integral.gamma_max)

        def delta(x):
            return float(fluid_free_energy(x, n, integral) - crystal_free_energy(x, n, log_spec, coef))

        grid = np.linspace(lo, hi, 200)
        d = np.array([delta(x) for x in grid])
        sign = np.nonzero(np.diff(np.sign(d)))[0]
        if len(sign) == 0:
            raise ValueError(f"the fluid and crystal free energies do not cross on Γ ∈ [{lo:.0f}, {hi:.0f}] "
                             f"(Δ = {d[0]:+.4f} … {d[-1]:+.4f})")
        root = optimize.brentq(delta, grid[sign[0]], grid[sign[0] + 1], xtol=1e-6)
        return root, coef, chi2, (g1, u1), (g2, u2, s2), integral

    gm, coef, chi2, (g1, u1), (g2, u2, s2), integral = estimate(False)
    samples = []
    for _ in range(bootstrap):
        try:
            samples.append(estimate(True)[0])
        except ValueError:
            samples.append(np.nan)
    samples = np.array(samples)
    try:
        thin_shift = estimate(False, thin=True)[0] - gm
    except ValueError:
        thin_shift = np.nan
    # latent heat per particle at Γ_m: βu_fl − βu_cr from the two branches (fluid spline, crystal fit)
    u_fl = float(integral._spline(np.log1p(gm)) / (1 + gm) + E_MADELUNG)
    bu_cr = gm * E_MADELUNG + (n - 1) / n + sum(c * gm ** (-k) for k, c in enumerate(coef, start=1))
    fluid_info = {"gamma": gf, "psi6": pf, "rel": rf, "kept": okf, "nodes": g1, "u": u1}
    crystal_info = {"gamma": gc, "psi6": pc, "rel": rc, "kept": okc, "nodes": g2, "u": u2, "u_err": s2}
    return MeltingEstimate(
        n=n, gamma_m=float(gm), gamma_m_err=float(np.nanstd(samples)) if np.isfinite(samples).any() else np.nan,
        gamma_m_samples=samples,
        quadrature_shift=float(thin_shift), anharmonic=coef, chi2=chi2, fluid=fluid_info, crystal=crystal_info,
        latent_heat=float(gm * u_fl - bu_cr), sweeps=(int(fluid["sweeps"]), int(crystal["sweeps"])),
        wall_s=float(fluid["wall_s"]) + float(crystal["wall_s"]),
    )


def hysteresis(info: dict, phase: str) -> float:
    """The Γ beyond which a branch's replicas no longer all keep their phase (for the crystal the
    largest Γ with a melted replica, for the fluid the smallest Γ with a frozen one); NaN if none."""
    bad = info["gamma"][~info["kept"]]
    if len(bad) == 0:
        return float("nan")
    return float(bad.max() if phase == "crystal" else bad.min())


def format_report(r: MeltingEstimate) -> str:
    """Printable summary of a `MeltingEstimate`."""
    lines = [f"unpinned classical 2D Coulomb crystal, N = {r.n}, {r.sweeps[0]} (fluid) / {r.sweeps[1]} (crystal) "
             f"production sweeps, Monte Carlo wall time {r.wall_s:.0f} s"]
    lines.append("fluid branch (random start):  Γ     ũ − e_M      Ψ₆ (last half, per replica mean)  frozen")
    for x in np.unique(r.fluid["gamma"]):
        s = r.fluid["gamma"] == x
        u = r.fluid["u"][r.fluid["nodes"] == x]
        lines.append(f"  {x:7.3g}  {(u[0] - E_MADELUNG) if len(u) else np.nan:10.5f}   {r.fluid['psi6'][s].mean():.3f}"
                     f"   {int((~r.fluid['kept'][s]).sum())}/{int(s.sum())}")
    lines.append("crystal branch (ideal start): Γ     βu_anh ± err   Ψ₆     γ_rel=⟨|u_i−u_j|²⟩/a²  melted")
    for x in np.unique(r.crystal["gamma"]):
        s = r.crystal["gamma"] == x
        j = r.crystal["nodes"] == x
        bu = (x * (r.crystal["u"][j][0] - E_MADELUNG) - (r.n - 1) / r.n) if j.any() else np.nan
        be = x * r.crystal["u_err"][j][0] if j.any() else np.nan
        lines.append(f"  {x:7.1f}  {bu:8.4f} ± {be:.4f}   {r.crystal['psi6'][s].mean():.3f}   "
                     f"{2 * r.crystal['rel'][s].mean():.4f}   {int((~r.crystal['kept'][s]).sum())}/{int(s.sum())}")
    lines.append(f"βu_anh fit: c = {np.array2string(r.anharmonic, precision=3)} (Σ c_k Γ^-k), χ²/dof = {r.chi2:.2f}")
    ok = np.isfinite(r.gamma_m_samples)
    spread = (f"16–84 %: {np.nanpercentile(r.gamma_m_samples, 16):.1f}–{np.nanpercentile(r.gamma_m_samples, 84):.1f}"
              if ok.any() else "no bootstrap")
    lines.append(f"free-energy crossing: Γ_m = {r.gamma_m:.1f} ± {r.gamma_m_err:.1f} (bootstrap, {ok.sum()} of "
                 f"{len(ok)} resamples cross; {spread}); quadrature check (every other fluid node): "
                 f"{r.quadrature_shift:+.1f}")
    lines.append(f"latent heat at Γ_m: β(u_fl − u_cr) = {r.latent_heat:.3f} per particle")
    lines.append(f"hysteresis: crystal melted at Γ ≤ {hysteresis(r.crystal, 'crystal'):.0f}, "
                 f"fluid froze at Γ ≥ {hysteresis(r.fluid, 'fluid'):.0f} (NaN: none did)")
    return "\n".join(lines)
