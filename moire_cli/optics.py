"""Optical activity of the zone-centre phonons of a charged crystal (spec §9).

Every carrier has charge q_c = s·e (s = −1 electrons, +1 holes), so a uniform in-plane field E couples
to the centre of mass, H′ = −q_c Σ_κ u_κ·E, and a Γ mode s absorbs light of polarisation ê with the
oscillator strength

    f_s(ê) = 2ω_s |ê_tot† u_s|² / n,     ê_tot = (ê, ê, …, ê) (one copy per site),

where u_s is the mode's displacement in the symplectic normalisation of the companion problem,
u†(2ω − G)u = 1 (meV^-½; u = ε/√(2ω) at B = 0, so f_s = |Σ_κ ê*·ε_κs|²/n), and ê ∈ {x̂, ŷ,
σ± = (x̂ ± iŷ)/√2}. With E(t) = Re[E₀ ê e^{−iωt}], σ+ turns counterclockwise seen from +z (x̂ → ŷ), the
sense of a mode with l_z > 0. The real part of the conductivity per area is then

    Re σ_êê(ω) = (π n q_c²/2m) Σ_s f_s(ê) δ(ω − ω_s)   (ω > 0),

n the carrier density. Completeness of the modes, Σ_s ω_s (u_s u_s† + u_s* u_sᵀ) = 1 (the ω → ∞
limit of the resolvent of (D − ω² + ωG)), gives the oscillator-strength (f-, Thomas–Reiche–Kuhn) sum
rule Σ_s f_s(x̂) = Σ_s f_s(ŷ) = ½ Σ_s [f_s(σ+) + f_s(σ−)] = 1, i.e. the free-carrier weight n q_c²/m,
whatever the crystal, the field and the traps. Under B the circular sums separate: for one site per
cell (the generalized Kohn theorem, Kohn, Phys. Rev. 123, 1242 (1961); Brey, Johnson & Halperin,
PRB 40, 10647 (1989)) only the two Fock–Darwin lines ω± = Ω ± |ω_c|/2, Ω = √(ω_M² + ω_c²/4), absorb,
each one circular polarisation only, with f = ω±/Ω (σ+ on the upper line for electrons in B > 0).

Degenerate Γ multiplets (B = 0) are rotated into their circular basis (eigenvectors of the
rotation generator iJ inside the multiplet), so per-mode strengths, l_z and the helicity are gauge
invariant; modes in a multiplet whose rotation eigenvalues are also degenerate are flagged.
Units: ħω in meV; dipoles in e·nm; strengths dimensionless; spectra per meV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moire_cli.gyroscopic import DEGENERACY_RTOL, gyroscopic_modes
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2

#: Polarisations, in the order of the output columns.
POLARIZATIONS: tuple[str, ...] = ("sigma+", "sigma-", "x", "y")
_S2 = 1 / np.sqrt(2.0)
_VECTORS = {
    "sigma+": np.array([_S2, 1j * _S2]),
    "sigma-": np.array([_S2, -1j * _S2]),
    "x": np.array([1.0, 0.0]),
    "y": np.array([0.0, 1.0]),
}


def polarization_vector(name: str) -> np.ndarray:
    """Unit Jones vector (2,) complex of ``"sigma+"``, ``"sigma-"``, ``"x"`` or ``"y"``.

    Raises:
        ValueError: unknown name.
    """
    try:
        return _VECTORS[name].astype(complex)
    except KeyError:
        raise ValueError(f"unknown polarisation {name!r}; choose one of {list(POLARIZATIONS)}") from None


def _spin(m: int) -> np.ndarray:
    return 1j * np.kron(np.eye(m // 2), np.array([[0.0, -1.0], [1.0, 0.0]]))


def circular_basis(frequencies: np.ndarray, u: np.ndarray, *, rtol: float = DEGENERACY_RTOL):
    """Rotate each degenerate multiplet of Γ modes into eigenvectors of the rotation generator.

    Inside a multiplet (|Δω| ≤ rtol·max ω) the modes are Krein-orthonormal, u_a†(2ω − G)u_b = δ_ab, so
    the Hermitian matrix L_ab = 2ω u_a†(iJ)u_b (the kinetic l_z of :func:`moire_cli.chirality.angular_momentum`)
    is diagonalised by a unitary that keeps the normalisation.

    Args:
        frequencies: (2n,) ħω in meV, ascending.  u: (2n, 2n) columns u_s.

    Returns:
        (u′ (2n, 2n), l_z (2n,) in ħ, ambiguous (2n,) bool: multiplet whose l_z eigenvalues are
        themselves degenerate, so the per-mode split of the strengths is a gauge choice).
    """
    f = np.asarray(frequencies, dtype=float)
    u = np.array(u, dtype=complex)
    m = len(f)
    spin = _spin(m)
    tol = rtol * max(float(np.max(np.abs(f))), 1e-300)
    labels = np.concatenate([[0], np.cumsum(np.diff(f) > tol)])
    l_z = np.real(2 * f * np.einsum("is,ij,js->s", u.conj(), spin, u))
    ambiguous = np.zeros(m, dtype=bool)
    for lab in np.unique(labels):  # loop over multiplets at one q (not over q-points)
        idx = np.flatnonzero(labels == lab)
        if len(idx) < 2:
            continue
        w = float(np.mean(f[idx]))
        sub = u[:, idx]
        lmat = 2 * w * sub.conj().T @ spin @ sub
        val, rot = np.linalg.eigh(0.5 * (lmat + lmat.conj().T))
        u[:, idx] = sub @ rot
        l_z[idx] = val
        ambiguous[idx] = bool(np.any(np.diff(val) <= 1e-9 * max(1.0, float(np.max(np.abs(val))))))
    return u, l_z, ambiguous  # a unitary inside a multiplet keeps the Krein normalisation


@dataclass(frozen=True)
class GammaOptics:
    """Optical activity of the Γ modes (see module docstring).

    Attributes:
        frequencies: (2n,) ħω_s in meV (physical modes, ascending).
        displacements: (2n, 2n) u_s columns (meV^-½), multiplets in their circular basis.
        oscillator_strengths: {polarisation: (2n,)} f_s(ê), dimensionless, per site.
        dipoles: (2n, 2) complex ⟨1_s| q_c Σ_κ x_κ |0⟩ in e·nm (x, y components).
        l_z: (2n,) kinetic angular momentum in ħ.
        ambiguous: (2n,) bool, multiplet modes whose split is a gauge choice.
        omega_c: signed ħω_c (meV); charge_sign ±1; mass (m₀); n_sites.
    """

    frequencies: np.ndarray
    displacements: np.ndarray
    oscillator_strengths: dict
    dipoles: np.ndarray
    l_z: np.ndarray
    ambiguous: np.ndarray
    omega_c: float
    charge_sign: int
    mass: float
    n_sites: int

    @property
    def circular_polarization(self) -> np.ndarray:
        """(2n,) degree of circular polarisation (f_σ+ − f_σ−)/(f_σ+ + f_σ−), 0 where a mode is dark."""
        fp, fm = self.oscillator_strengths["sigma+"], self.oscillator_strengths["sigma-"]
        tot = fp + fm
        big = tot > 1e-12 * max(float(np.max(tot)), 1e-300)
        return np.where(big, (fp - fm) / np.where(big, tot, 1.0), 0.0)

    def f_sums(self) -> dict:
        """Σ_s f_s per polarisation and the circular mean ½Σ(f_σ+ + f_σ−); each is 1 (free-carrier weight)."""
        s = {k: float(np.sum(v)) for k, v in self.oscillator_strengths.items()}
        s["circular_mean"] = 0.5 * (s["sigma+"] + s["sigma-"])
        return s

    def absorption(self, energies_meV: np.ndarray, broadening_meV: float) -> dict:
        """Absorption spectra A_ê(E) = Σ_s f_s(ê) L_γ(E − ħω_s) in 1/meV (∫A dE → Σ_s f_s = 1).

        L_γ is the Lorentzian of half width γ = ``broadening_meV`` (> 0); A is Re σ_êê/(π n q_c²/2mħ).

        Args:
            energies_meV: (N_E,) photon energies.
        Returns:
            dict polarisation → (N_E,), plus ``"circular_dichroism"`` (A_σ+ − A_σ−)/(A_σ+ + A_σ−).
        Raises:
            ValueError: broadening ≤ 0.
        """
        if not broadening_meV > 0:
            raise ValueError(f"absorption broadening must be positive, got {broadening_meV} meV")
        e = np.asarray(energies_meV, dtype=float)
        g = float(broadening_meV)
        lor = (g / np.pi) / ((e[:, None] - self.frequencies[None, :]) ** 2 + g**2)  # (N_E, 2n)
        out = {k: lor @ v for k, v in self.oscillator_strengths.items()}
        tot = out["sigma+"] + out["sigma-"]
        out["circular_dichroism"] = np.where(tot > 0, (out["sigma+"] - out["sigma-"]) / np.where(tot > 0, tot, 1.0), 0.0)
        return out

    def summary(self) -> dict:
        """JSON-ready digest: Γ lines, strengths, helicities, f-sum rule (``f_sum_ratio`` must be 1)."""
        sums = self.f_sums()
        dev = max(abs(sums[k] - 1.0) for k in ("x", "y", "circular_mean"))
        bright = np.flatnonzero(self.oscillator_strengths["x"] + self.oscillator_strengths["y"] > 1e-8)
        return {
            "hbar_omega_c_meV": self.omega_c,
            "charge_sign": self.charge_sign,
            "gamma_frequencies_meV": self.frequencies.tolist(),
            "oscillator_strengths": {k: v.tolist() for k, v in self.oscillator_strengths.items()},
            "circular_polarization": self.circular_polarization.tolist(),
            "l_z_hbar": self.l_z.tolist(),
            "bright_modes": bright.tolist(),
            "f_sums": sums,
            "f_sum_ratio": 0.5 * (sums["x"] + sums["y"]),
            "f_sum_max_deviation": dev,
        }


def gamma_optics(
    dynamical_matrix_gamma: np.ndarray,
    *,
    omega_c: float,
    mass: float,
    charge_sign: int = -1,
    rtol: float = DEGENERACY_RTOL,
) -> GammaOptics:
    """Oscillator strengths, dipoles and helicities of the Γ modes, with or without a field.

    Args:
        dynamical_matrix_gamma: (2n, 2n) (or (1, 2n, 2n)) ħ²D(q = 0) in meV² (``dynamics.dynamical_matrix``
            at exactly q = 0: the non-analytic Coulomb term vanishes there in 2D).
        omega_c: signed ħω_c in meV (``cyclotron_energy``).
        mass: carrier mass in m₀ (> 0).  charge_sign: −1 electrons, +1 holes.

    Returns:
        :class:`GammaOptics`.

    Raises:
        ValueError: bad shape, mass ≤ 0, charge_sign not ±1, or a Γ mode that is unstable or not
        normalisable (ω ≤ 0): the sum rule and strengths are then undefined.
    """
    if charge_sign not in (-1, 1):
        raise ValueError(f"charge_sign must be -1 (electrons) or +1 (holes), got {charge_sign}")
    if not mass > 0:
        raise ValueError(f"mass must be positive, got {mass}")
    d = np.asarray(dynamical_matrix_gamma)
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3 or d.shape[0] != 1:
        raise ValueError(f"expected one Γ dynamical matrix (2n, 2n), got shape {d.shape}")
    modes = gyroscopic_modes(d, omega_c, rtol=rtol)
    f, u = modes.frequencies[0], modes.displacements[0]
    if not np.all(modes.normalized[0]) or np.any(f <= 0):
        raise ValueError(
            "a Γ mode is unstable or has zero or negative energy (min ħω = "
            f"{float(f.min()):.4g} meV): oscillator strengths are undefined"
        )
    m = len(f)
    n = m // 2
    u, l_z, ambiguous = circular_basis(f, u, rtol=rtol)
    com = u.reshape(n, 2, m).sum(axis=0)  # (2, 2n): Σ_κ u_κ,α,s
    strengths = {}
    for name in POLARIZATIONS:
        e = polarization_vector(name)
        strengths[name] = 2 * f * np.abs(e.conj() @ com) ** 2 / n
    dipoles = charge_sign * np.sqrt(HBAR2_OVER_M0_MEV_NM2 / mass) * com.T  # (2n, 2) e·nm
    return GammaOptics(f, u, strengths, dipoles, l_z, ambiguous, float(omega_c), int(charge_sign), float(mass), n)


def fock_darwin_lines(hbar_omega_M: float, omega_c: float) -> dict:
    """Closed form for one site per cell (generalized Kohn theorem): the two Γ lines and weights.

    Returns dict(lower, upper (meV), f_upper = ω₊/Ω, f_lower = ω₋/Ω, upper_polarization: "sigma+"
    when ω_c > 0 (electrons in B > 0) else "sigma-").
    """
    big = float(np.sqrt(hbar_omega_M**2 + 0.25 * omega_c**2))
    up, lo = big + 0.5 * abs(omega_c), big - 0.5 * abs(omega_c)
    return {
        "lower": lo,
        "upper": up,
        "f_upper": up / big,
        "f_lower": lo / big,
        "upper_polarization": "sigma+" if omega_c >= 0 else "sigma-",
    }
