"""Classical Monte Carlo of the full anharmonic problem (spec §12, `melt.method: monte-carlo`).

N = L1·L2·n particles in a periodic supercell of the crystal (L1 a1, L2 a2), the full cosine moiré
potential Δ(r) and the pair interaction summed over all periodic images, sampled by Metropolis
single-particle moves at every temperature of a sweep at once (the replicas are the temperatures:
each move is one numpy operation over all of them and over all N partners; the moves themselves are
sequential, as detailed balance for long-range interactions requires).

Periodic pair energy (Ewald split, Bonsall & Maradudin, PRB 15, 1959 (1977)). With C the Coulomb
tail of U (C = e²/κ for Coulomb and Keldysh, 0 for dipoles and gates):
    φ(r) = [U(r) − C erf(ηr)/r]_minimum image + (2πC/A) Σ_{G≠0} erfc(G/2η)/G · cos(G·r).
η = 4.5/r_c with r_c half the shortest supercell vector, so the erfc part beyond the minimum image is
< 1e-9 relative; the smooth reciprocal part is tabulated once by FFT on an M×M grid (M·h·η ≤ 0.1
spacing) and read back by periodic cubic-spline interpolation (`scipy.ndimage.map_coordinates`;
error < 1e-6 e²/(κa), tested against `moire_cli.ewald`); the short part by a cubic spline in ln r
(plain Coulomb: C erfc(ηr)/r directly).
The non-Coulomb remainders
(Keldysh's U − C/r ~ (r₀/κ)²/r³, the dipolar 1/r³) are cut at the minimum image (r_c); the uniform
background and the self-image term are constants and drop out of every energy difference.

Measurements (every ``measure_every`` sweeps, after ``equilibration`` sweeps with step sizes tuned to
an acceptance of ~0.5, at most half the neighbour distance): the energy per particle, ⟨u²⟩ about the ideal sites (the centre of mass
removed for an unpinned crystal, whose q = 0 mode is free), the single-site and relative
(nearest-neighbour bond) Lindemann ratios as in `moire_cli.lindemann`, and the bond-orientational
order Ψ₆ = |N⁻¹ Σ_i ψ₆,i|, ψ₆,i = mean over the Delaunay neighbours j of e^{6iθ_ij} (periodic
Delaunay triangulation), with its susceptibility χ₆ = N(⟨Ψ₆²⟩ − ⟨Ψ₆⟩²). Error bars by blocking
(Flyvbjerg & Petersen, J. Chem. Phys. 91, 461 (1989)): ``blocks`` equal blocks of the production run,
standard error of the block means; the equilibration check compares the first and second halves of
the blocks (within 3σ). Classical statistics: the mass does not enter.

Units: nm, meV, K. Constants from `moire_cli.units`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, special
from scipy.interpolate import CubicSpline
from scipy.spatial import Delaunay

from moire_cli.potentials import Coulomb
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2, K_B_MEV_PER_K

METHOD = "monte-carlo"


# --------------------------------------------------------------------------------------------
# Supercell and periodic pair energy
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Supercell:
    """Ideal sites (N, 2) nm of an L1×L2 supercell, its box rows (2, 2) nm and the nearest-neighbour
    bonds (i, j) (each once) with their length a (nm)."""

    sites: np.ndarray
    box: np.ndarray
    size: tuple[int, int]
    bonds: np.ndarray
    a: float

    @property
    def n(self) -> int:
        return len(self.sites)

    def minimum_image(self, d: np.ndarray) -> np.ndarray:
        """Displacements (..., 2) nm mapped to their minimum image (fractional rounding)."""
        inv = self.__dict__.get("_inv")
        if inv is None:
            inv = self.__dict__["_inv"] = np.linalg.inv(self.box)
        s = d @ inv
        return (s - np.round(s)) @ self.box


def build_supercell(crystal, size: tuple[int, int]) -> Supercell:
    """The L1×L2 supercell of ``crystal`` (cell rows a1, a2, basis τ_κ).

    Raises:
        ValueError: a size < 2 along either direction.
    """
    l1, l2 = (int(s) for s in size)
    if l1 < 2 or l2 < 2:
        raise ValueError(f"the Monte Carlo supercell must be at least 2×2 cells, got {size}")
    i, j = np.meshgrid(np.arange(l1), np.arange(l2), indexing="ij")
    cells = i.ravel()[:, None] * crystal.cell[0] + j.ravel()[:, None] * crystal.cell[1]
    sites = (cells[:, None, :] + crystal.basis[None]).reshape(-1, 2)
    box = np.array([l1 * crystal.cell[0], l2 * crystal.cell[1]])
    sc = Supercell(sites, box, (l1, l2), np.zeros((0, 2), dtype=int), crystal.nearest_neighbour_distance)
    d = sc.minimum_image(sites[None] - sites[:, None])
    r = np.linalg.norm(d, axis=-1)
    ii, jj = np.nonzero(np.triu(np.abs(r - sc.a) <= 1e-6 * sc.a, k=1))
    return Supercell(sites, box, (l1, l2), np.stack([ii, jj], axis=1), sc.a)


def _minimum_image_radius(box: np.ndarray) -> float:
    n = np.arange(-2, 3)
    v = (n[:, None, None] * box[0] + n[None, :, None] * box[1]).reshape(-1, 2)
    r = np.linalg.norm(v, axis=1)
    return 0.5 * float(r[r > 0].min())


@dataclass(eq=False)
class PeriodicPairEnergy:
    """φ(d) (meV) of the interaction summed over the supercell's images, for displacements d (..., 2)
    nm already reduced to the minimum image (see the module docstring for the split and accuracy)."""

    interaction: object
    supercell: Supercell
    grid: int = 0
    eta: float = field(init=False)
    r_cut: float = field(init=False)

    def __post_init__(self) -> None:
        sc = self.supercell
        self.r_cut = _minimum_image_radius(sc.box)
        self.eta = 4.5 / self.r_cut
        c = float(getattr(self.interaction, "coulomb_tail", 0.0))
        self._c = c
        r_lo = 1e-3 * sc.a
        self._r_lo = r_lo
        self._short = None  # plain Coulomb: C erfc(ηr)/r directly (6× faster than the spline)
        if type(self.interaction) is not Coulomb:
            r = np.geomspace(r_lo, self.r_cut, 4096)
            u = self.interaction.radial(r)[0] - (c * special.erf(self.eta * r) / r if c else 0.0)
            self._short = CubicSpline(np.log(r), u)
        self._inv_box = np.linalg.inv(sc.box)
        if c:
            side = np.linalg.norm(sc.box, axis=1).max()
            m = self.grid or int(2 ** np.ceil(np.log2(max(32, side * self.eta / 0.1))))
            self.grid = m
            n = np.fft.fftfreq(m, 1.0 / m)  # integer indices
            n1, n2 = np.meshgrid(n, n, indexing="ij")
            recip = 2 * np.pi * np.linalg.inv(sc.box).T
            g = np.linalg.norm(n1[..., None] * recip[0] + n2[..., None] * recip[1], axis=-1)
            area = abs(np.linalg.det(sc.box))
            with np.errstate(divide="ignore", invalid="ignore"):
                coef = np.where(g > 0, 2 * np.pi * c / area * special.erfc(g / (2 * self.eta)) / g, 0.0)
            values = np.real(np.fft.ifft2(coef)) * m * m  # φ_long at fractional (m1/M, m2/M)
            self._spline = ndimage.spline_filter(values, order=3, mode="grid-wrap")

    def __call__(self, d: np.ndarray) -> np.ndarray:
        r = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)
        inside = r <= self.r_cut
        rc = np.clip(r, self._r_lo, self.r_cut)
        if self._short is None:
            out = np.where(inside, self._c * special.erfc(self.eta * rc) / rc, 0.0)
        else:
            out = np.where(inside, self._short(np.log(rc)), 0.0)
        tiny = r < self._r_lo
        if tiny.any():  # closer than 1e-3 a: direct (never in practice: the pair repulsion)
            rt = np.maximum(r[tiny], 1e-300)
            out[tiny] = self.interaction.radial(rt)[0] - (self._c * special.erf(self.eta * rt) / rt if self._c else 0)
        if self._c:
            s = (d @ self._inv_box) * self.grid  # grid coordinates; periodic
            coords = np.stack([s[..., 0].ravel(), s[..., 1].ravel()])
            out = out + ndimage.map_coordinates(self._spline, coords, order=3, mode="grid-wrap",
                                                prefilter=False).reshape(r.shape)
        return out


def harmonic_classical_msd(model, size: tuple[int, int], temperatures: np.ndarray) -> np.ndarray:
    """(k_BT/m)⟨tr D⁻¹⟩ per site on the supercell's own q-mesh (L1×L2, Γ included), the harmonic
    classical ⟨u²⟩ (nm²) that the Monte Carlo reproduces at low T; for an unpinned crystal the q = 0
    (centre-of-mass) modes are left out, as the Monte Carlo removes the centre of mass. (N_T,)."""
    from moire_cli import crystals, dynamics

    q = crystals.monkhorst_pack(model.crystal, size)
    d = dynamics.dynamical_matrix(model, q)  # ħ²D meV²
    n = model.crystal.n_sites
    w2, e = np.linalg.eigh(d)
    keep = w2 > 1e-9 * np.abs(w2).max()
    inv = np.where(keep, 1.0 / np.where(keep, w2, 1.0), 0.0)
    trace = float((np.abs(e) ** 2 * inv[:, None, :]).sum() / (len(q) * n))
    return K_B_MEV_PER_K * np.asarray(temperatures, dtype=float) * HBAR2_OVER_M0_MEV_NM2 / model.mass * trace


# --------------------------------------------------------------------------------------------
# Observables
# --------------------------------------------------------------------------------------------
def bond_orientational_order(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Ψ₆ = |N⁻¹ Σ_i ψ₆,i| with ψ₆,i the mean of e^{6iθ_ij} over the Delaunay neighbours of i, from a
    periodic Delaunay triangulation (the box tiled 3×3). positions (R, N, 2) nm -> (R,)."""
    inv = np.linalg.inv(box)
    shifts = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=float) @ box  # (9, 2)
    out = np.empty(len(positions))
    for k, x in enumerate(positions):  # replicas (one triangulation each)
        s = x @ inv
        x0 = (s - np.floor(s)) @ box
        pts = (x0[None] + shifts[:, None]).reshape(-1, 2)
        tri = Delaunay(pts)
        indptr, nbr = tri.vertex_neighbor_vertices
        centre = 4 * len(x0) + np.arange(len(x0))  # the untranslated copy (shift (0, 0) is 5th)
        counts = indptr[centre + 1] - indptr[centre]
        owner = np.repeat(np.arange(len(x0)), counts)
        idx = np.concatenate([nbr[indptr[c] : indptr[c + 1]] for c in centre])
        d = pts[idx] - x0[owner]
        z = np.exp(6j * np.arctan2(d[:, 1], d[:, 0]))
        psi_i = np.bincount(owner, z.real, len(x0)) / counts + 1j * np.bincount(owner, z.imag, len(x0)) / counts
        out[k] = abs(psi_i.mean())
    return out


def blocking(series: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block means (..., B), mean and standard error of the mean (...) of a time series (..., T)."""
    t = series.shape[-1] // blocks * blocks
    means = series[..., :t].reshape(*series.shape[:-1], blocks, -1).mean(axis=-1)
    return means, means.mean(axis=-1), means.std(axis=-1, ddof=1) / np.sqrt(blocks)


def _moire_function(pot):
    """Δ(r) (meV) of the full cosine potential for r (..., 2) measured from its minimum, or the
    potential's own `value` (harmonic-only mode); None without a potential."""
    if pot is None or pot.harmonic_only:
        return None if pot is None else pot.value
    b, shift = pot.b.T, pot.r_min @ pot.b.T + pot.psi_eff

    def value(r):
        return 2 * pot.V * np.cos(r @ b + shift).sum(-1)

    return value


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MonteCarloResult:
    """Classical Monte Carlo at N_T temperatures. Means with their blocking standard errors (``*_err``).

    Attributes:
        temperatures: (N_T,) K.  n_particles: N.  supercell: (L1, L2).  sweeps, equilibration: counts.
        energy: (N_T,) meV per particle (relative to its value in the ideal crystal).
        mean_square_displacement: (N_T,) ⟨u²⟩ nm² per particle (centre of mass removed if unpinned).
        lindemann_ratio: (N_T,) √⟨u²⟩/a.  relative_lindemann_ratio: (N_T,) √(⟨|u_i − u_j|²⟩/2)/a.
        psi6: (N_T,) ⟨Ψ₆⟩.  psi6_susceptibility: (N_T,) χ₆ = N(⟨Ψ₆²⟩ − ⟨Ψ₆⟩²).
        acceptance: (N_T,) of the production moves.  step: (N_T,) nm, the tuned move size.
        equilibrated: (N_T,) bool, first and second half of the blocks agree within 3σ (energy, ⟨u²⟩).
        harmonic_msd: (N_T,) the harmonic classical ⟨u²⟩ on the same supercell (`harmonic_classical_msd`).
        gamma: (N_T,) Γ = C√(πn)/(k_BT) for an interaction with a Coulomb tail C (else NaN).
        traces: {"energy", "mean_square_displacement", "psi6"}: (N_T, blocks) block means.
        pinned: bool.  seed: the seed used.  positions: (N_T, N, 2) nm, the last configuration.
    """

    temperatures: np.ndarray
    n_particles: int
    supercell: tuple[int, int]
    sweeps: int
    equilibration: int
    energy: np.ndarray
    energy_err: np.ndarray
    mean_square_displacement: np.ndarray
    mean_square_displacement_err: np.ndarray
    lindemann_ratio: np.ndarray
    lindemann_ratio_err: np.ndarray
    relative_lindemann_ratio: np.ndarray
    relative_lindemann_ratio_err: np.ndarray
    psi6: np.ndarray
    psi6_err: np.ndarray
    psi6_susceptibility: np.ndarray
    acceptance: np.ndarray
    step: np.ndarray
    equilibrated: np.ndarray
    harmonic_msd: np.ndarray
    gamma: np.ndarray
    traces: dict
    pinned: bool
    seed: int
    positions: np.ndarray | None = None
    method: str = METHOD


def run_monte_carlo(
    model,
    temperatures: np.ndarray,
    supercell: tuple[int, int] = (12, 12),
    sweeps: int = 2000,
    equilibration: int = 500,
    blocks: int = 20,
    measure_every: int = 1,
    psi6_every: int = 10,
    seed: int = 0,
    initial: str | np.ndarray = "crystal",
) -> MonteCarloResult:
    """Metropolis Monte Carlo of ``model`` (a relaxed `dynamics.LatticeModel`) at all temperatures.

    Args:
        temperatures: (N_T,) K > 0 (one replica each, simulated together).
        supercell: (L1, L2) cells; N = L1·L2·n particles.
        sweeps: production sweeps (N attempted moves each) after ``equilibration`` sweeps.
        blocks: blocks for the error bars (≥ 4; the production measurements are split evenly).
        measure_every / psi6_every: sweeps between measurements of E, ⟨u²⟩ / of Ψ₆ (Delaunay).
        seed: `numpy.random.default_rng` seed; the same seed gives the same numbers.
        initial: the start, "crystal" (the ideal sites), "random" (uniform in the supercell, a
            disordered start for cooling runs) or positions (N_T, N, 2) nm (e.g. a previous
            result's ``positions``).

    Raises:
        ValueError: T ≤ 0, too few sweeps for the blocks, blocks < 4, an unknown or misshapen start.
    """
    temps = np.atleast_1d(np.asarray(temperatures, dtype=float))
    if temps.ndim != 1 or np.any(~np.isfinite(temps)) or np.any(temps <= 0):
        raise ValueError("Monte Carlo temperatures must be > 0 K")
    if blocks < 4:
        raise ValueError(f"blocks must be ≥ 4, got {blocks}")
    if sweeps // max(measure_every, psi6_every) < blocks:
        raise ValueError(f"{sweeps} sweeps give fewer Ψ₆ measurements than the {blocks} blocks")
    rng = np.random.default_rng(seed)
    sc = build_supercell(model.crystal, supercell)
    moire_value = _moire_function(model.potential)
    pair = PeriodicPairEnergy(model.interaction, sc)
    pot = model.potential
    scales = np.tile(model.scales, sc.size[0] * sc.size[1])  # per-particle trap scale
    n, n_r = sc.n, len(temps)
    beta = 1.0 / (K_B_MEV_PER_K * temps)

    diag = np.eye(n, dtype=bool)[..., None]
    e_ideal = pair(np.where(diag, sc.a, sc.minimum_image(sc.sites[None] - sc.sites[:, None])))
    np.fill_diagonal(e_ideal, 0.0)
    x_ideal = np.broadcast_to(sc.sites, (n_r, n, 2))
    onsite = (scales * pot.value(x_ideal)) if pot is not None else np.zeros((n_r, n))
    e_ref = 0.5 * e_ideal.sum() / n + onsite.mean(axis=1)  # the ideal crystal: energies relative to it
    if isinstance(initial, str) and initial == "crystal":
        x = x_ideal.copy()
        e_pair = np.broadcast_to(e_ideal, (n_r, n, n)).copy()  # (R, N, N) pair energies, kept up to date
    else:
        if isinstance(initial, str):
            if initial != "random":
                raise ValueError(f"initial must be 'crystal', 'random' or positions, got {initial!r}")
            x = rng.random((n_r, n, 2)) @ sc.box
        else:
            x = np.array(initial, dtype=float)
            if x.shape != (n_r, n, 2) or not np.all(np.isfinite(x)):
                raise ValueError(f"initial positions must be finite, shape {(n_r, n, 2)}, got {x.shape}")
        e_pair = np.stack([pair(np.where(diag, sc.a, sc.minimum_image(xr[None] - xr[:, None]))) for xr in x])
        e_pair[:, np.arange(n), np.arange(n)] = 0.0
    step = np.full(n_r, 0.05 * sc.a)
    rows = np.arange(n_r)
    series: dict[str, list] = {"energy": [], "msd": [], "rel": [], "psi6": []}
    accepted = np.zeros(n_r)
    for sweep in range(equilibration + sweeps):
        moves = rng.standard_normal((n, n_r, 2)) * step[None, :, None]
        log_u = np.log(rng.random((n, n_r)))
        acc_sweep = np.zeros(n_r)
        for k, i in enumerate(rng.permutation(n)):  # sequential single-particle moves, all replicas at once
            new = x[:, i] + moves[k]  # (R, 2)
            d = sc.minimum_image(x - new[:, None])  # (R, N, 2)
            d[:, i] = sc.a  # placeholder for the self term (zeroed below)
            e_new = pair(d)
            e_new[:, i] = 0.0
            de = e_new.sum(axis=1) - e_pair[:, i].sum(axis=1)
            if pot is not None:
                de += scales[i] * (moire_value(new) - moire_value(x[:, i]))
            acc = log_u[k] < -beta * de
            if acc.any():
                r = rows[acc]
                x[r, i] = new[acc]
                e_pair[r, i, :] = e_new[acc]
                e_pair[r, :, i] = e_new[acc]
            acc_sweep += acc
        acc_sweep /= n
        if sweep < equilibration:
            if sweep % 5 == 4:  # tune the step towards an acceptance of 0.5
                step = np.minimum(step * np.clip(np.exp(acc_sweep - 0.5), 0.5, 2.0), 0.5 * sc.a)  # ≤ a/2
            continue
        accepted += acc_sweep
        k = sweep - equilibration
        if k % measure_every == 0:
            u = x - sc.sites
            if pot is None:
                u = u - u.mean(axis=1, keepdims=True)
            onsite = (scales * pot.value(x)) if pot is not None else np.zeros((n_r, n))
            series["energy"].append(0.5 * e_pair.sum(axis=(1, 2)) / n + onsite.mean(axis=1) - e_ref)
            series["msd"].append((u**2).sum(axis=-1).mean(axis=1))
            du = u[:, sc.bonds[:, 0]] - u[:, sc.bonds[:, 1]]
            series["rel"].append((du**2).sum(axis=-1).mean(axis=1) / 2)
        if k % psi6_every == 0:
            series["psi6"].append(bond_orientational_order(x, sc.box))
    ts = {key: np.stack(v, axis=1) for key, v in series.items()}  # (R, T_k)
    e_blk, e_mean, e_err = blocking(ts["energy"], blocks)
    m_blk, m_mean, m_err = blocking(ts["msd"], blocks)
    _, r_mean, r_err = blocking(ts["rel"], blocks)
    p_blk, p_mean, p_err = blocking(ts["psi6"], blocks)
    chi = n * (np.mean(ts["psi6"] ** 2, axis=1) - np.mean(ts["psi6"], axis=1) ** 2)
    half = blocks // 2

    def agree(blk):
        a, b = blk[:, :half], blk[:, half:]
        se = np.sqrt(a.var(axis=1, ddof=1) / a.shape[1] + b.var(axis=1, ddof=1) / b.shape[1])
        return np.abs(a.mean(axis=1) - b.mean(axis=1)) <= 3 * se + 1e-300

    c = float(getattr(model.interaction, "coulomb_tail", 0.0))
    density = model.crystal.density
    a2 = sc.a**2
    return MonteCarloResult(
        temperatures=temps, n_particles=n, supercell=sc.size, sweeps=sweeps, equilibration=equilibration,
        energy=e_mean, energy_err=e_err, mean_square_displacement=m_mean, mean_square_displacement_err=m_err,
        lindemann_ratio=np.sqrt(m_mean / a2), lindemann_ratio_err=m_err / (2 * np.sqrt(m_mean * a2)),
        relative_lindemann_ratio=np.sqrt(r_mean / a2), relative_lindemann_ratio_err=r_err / (2 * np.sqrt(r_mean * a2)),
        psi6=p_mean, psi6_err=p_err, psi6_susceptibility=chi, acceptance=accepted / sweeps, step=step,
        equilibrated=agree(e_blk) & agree(m_blk), harmonic_msd=harmonic_classical_msd(model, sc.size, temps),
        gamma=np.full(n_r, c * np.sqrt(np.pi * density) / K_B_MEV_PER_K) / temps if c else np.full(n_r, np.nan),
        traces={"energy": e_blk, "mean_square_displacement": m_blk, "psi6": p_blk},
        pinned=pot is not None, seed=int(seed), positions=x,
    )
