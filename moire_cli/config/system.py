"""The physical system shared by every `moire` command (spec §2–§4): ``crystal``
(:class:`CrystalConfig`), ``moire_potential`` (:class:`MoirePotentialConfig`), ``dielectric``
(:class:`DielectricConfig`), ``interaction`` (:class:`InteractionConfig`), ``ewald`` (:class:`EwaldConfig`),
gathered in :class:`SystemConfig` with ``build_model()``. A command config subclasses :class:`SystemConfig`
(moire_cli/config/phonons.py, moire_cli/config/melt.py).

Units: nm, meV, m₀, degrees for ψ.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from moire_cli.config.common import LIMITS, _Section
from moire_cli.crystals import (
    BUILTIN_CRYSTALS,
    MOIRE_LATTICE,
    SUPERLATTICE_TOL,
    Crystal,
    build_crystal,
    gauss_reduce,
    moire_lattice_coefficients,
)
from moire_cli.dynamics import LatticeModel
from moire_cli.potentials import Coulomb, DualGate, Keldysh, MoirePotential, PairInteraction
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2

#: Sites of a user basis closer than this (units of a_M, modulo lattice vectors) are rejected.
MIN_SITE_SEPARATION = 1e-2
#: Largest |entry| of a user cell and of a user basis site (units of a_M).
MAX_CELL_ENTRY = 1e3
MAX_BASIS_COORDINATE = 1e4


def _check_distinct_sites(cell: np.ndarray, basis: np.ndarray) -> None:
    """Raise ValueError if two basis sites coincide modulo a lattice vector (units of a_M)."""
    cell = gauss_reduce(cell)  # the 3×3 neighbouring cells below suffice for a reduced cell only
    frac = basis @ np.linalg.inv(cell)
    for i in range(len(basis)):
        for j in range(i):
            df = frac[i] - frac[j]
            df -= np.round(df)
            # nearest image among the 3×3 neighbouring cells of the reduced cell
            shifts = np.array([[a, b] for a in (-1, 0, 1) for b in (-1, 0, 1)])
            dist = np.linalg.norm((df + shifts) @ cell, axis=1).min()
            if dist < MIN_SITE_SEPARATION:
                raise ValueError(
                    f"crystal.basis sites {j} and {i} coincide (distance {dist:.3g} a_M modulo the cell, "
                    f"minimum {MIN_SITE_SEPARATION:g})"
                )


class CrystalConfig(_Section):
    """Crystal: a built-in of spec §4 or a user-defined cell + basis (both in units of a_M)."""

    name: str = "triangular"
    cell: list[list[float]] | None = None
    basis: list[list[float]] | None = None

    @model_validator(mode="after")
    def _check(self) -> CrystalConfig:
        if self.name in BUILTIN_CRYSTALS:
            if self.cell is not None or self.basis is not None:
                raise ValueError(f"crystal {self.name!r} is built in: cell/basis are only for user-defined crystals")
        else:
            if self.cell is None or self.basis is None:
                raise ValueError(
                    f"unknown crystal {self.name!r}: use one of {sorted(BUILTIN_CRYSTALS)} or give cell and basis"
                )
            if np.shape(self.cell) != (2, 2):
                raise ValueError("crystal.cell must be two 2-vectors [[x, y], [x, y]] (units of a_M)")
            if len(self.basis) < 1 or np.shape(self.basis)[1:] != (2,):
                raise ValueError("crystal.basis must be a list of 2-vectors (units of a_M)")
            cell = np.array(self.cell)
            if np.abs(cell).max() > MAX_CELL_ENTRY or np.abs(self.basis).max() > MAX_BASIS_COORDINATE:
                raise ValueError(
                    f"crystal.cell entries must be within ±{MAX_CELL_ENTRY:g} a_M and crystal.basis coordinates "
                    f"within ±{MAX_BASIS_COORDINATE:g} a_M (sites are wrapped into the cell; beyond that "
                    f"round-off moves them)"
                )
            if abs(np.linalg.det(cell)) < 1e-9 * np.prod(np.linalg.norm(cell, axis=1)):
                raise ValueError("crystal.cell vectors are linearly dependent")
            _check_distinct_sites(cell, np.array(self.basis))
        return self

    def build(self, a_M: float, commensurate: bool = False) -> Crystal:
        """The crystal at moiré period a_M (nm). ``commensurate``: a user cell is snapped to the exact
        moiré lattice vectors it was checked to be (within :data:`SUPERLATTICE_TOL`)."""
        cell = self.cell
        if commensurate and cell is not None:
            cell = moire_lattice_coefficients(cell)[0] @ MOIRE_LATTICE
        return build_crystal(self.name, a_M, cell, self.basis)


class MoirePotentialConfig(_Section):
    """Moiré potential Δ(r) = 2V Σ cos(b_j·r + ψ) (spec §2). V = 0 means unpinned.

    ``hbar_omega_M`` (meV), when given, sets V from ħω_M = (4πħ/a_M)√(V c(ψ)/m) instead of ``V``.
    """

    a_M: float = Field(ge=LIMITS["a_M"][0], le=LIMITS["a_M"][1], description="moiré period (nm)")
    V: float = Field(0.0, ge=0, le=LIMITS["V"][1], description="amplitude (meV)")
    psi_deg: float = Field(0.0, ge=-LIMITS["psi_deg"][1], le=LIMITS["psi_deg"][1], description="phase ψ (degrees)")
    carrier: Literal["electron", "hole"] = "electron"
    harmonic_only: bool = False
    hbar_omega_M: float | None = Field(None, gt=0, le=LIMITS["V"][1], description="direct ħω_M input (meV); overrides V")
    trap_scale: list[float] | None = Field(
        None, description="per-site multiplier of Δ (one per basis site; unequal values break inversion)"
    )

    @model_validator(mode="after")
    def _check_trap_scale(self) -> MoirePotentialConfig:
        hi = LIMITS["trap_scale"][1]
        if self.trap_scale is not None and not all(np.isfinite(x) and 0 <= x <= hi for x in self.trap_scale):
            raise ValueError(f"moire_potential.trap_scale entries must be between 0 and {hi:g}")
        return self

    def build(self, mass: float) -> MoirePotential | None:
        sign = 1 if self.carrier == "electron" else -1
        psi = np.deg2rad(self.psi_deg)
        V = self.V
        if self.hbar_omega_M is not None:
            unit = MoirePotential(self.a_M, 1.0, psi, sign)
            V = self.hbar_omega_M**2 * mass / (HBAR2_OVER_M0_MEV_NM2 * unit.k_M)
        if V == 0:
            return None
        return MoirePotential(self.a_M, V, psi, sign, self.harmonic_only)


class DielectricConfig(_Section):
    """Dielectric environment: κ = (ε_top + ε_bottom)/2. Default 4.5, the hBN value many papers use
    (√(ε∥ ε⊥) of hBN lies in 4.5–5.1; the materials table uses 5.1, see moire_cli/config/materials.py)."""

    epsilon_top: float = Field(4.5, ge=1, le=LIMITS["epsilon"][1], description="relative permittivity above (≥ 1, vacuum)")
    epsilon_bottom: float = Field(4.5, ge=1, le=LIMITS["epsilon"][1], description="relative permittivity below (≥ 1, vacuum)")

    @property
    def kappa(self) -> float:
        return 0.5 * (self.epsilon_top + self.epsilon_bottom)


class InteractionConfig(_Section):
    """Pair interaction (spec §3): coulomb; keldysh with r0 (nm); dual-gate with d_g (nm)."""

    kind: Literal["coulomb", "keldysh", "dual-gate"] = "coulomb"
    r0: float | None = Field(None, ge=LIMITS["length"][0], le=LIMITS["length"][1], description="Keldysh screening length r₀ (nm)")
    d_g: float | None = Field(None, ge=LIMITS["length"][0], le=LIMITS["length"][1], description="gate distance d_g (nm)")

    @model_validator(mode="after")
    def _check(self) -> InteractionConfig:
        if self.kind == "keldysh" and self.r0 is None:
            raise ValueError("interaction.r0 is required for kind 'keldysh'")
        if self.kind == "dual-gate" and self.d_g is None:
            raise ValueError("interaction.d_g is required for kind 'dual-gate'")
        return self

    def build(self, kappa: float) -> PairInteraction:
        if self.kind == "keldysh":
            return Keldysh(kappa, self.r0)
        if self.kind == "dual-gate":
            return DualGate(kappa, self.d_g)
        return Coulomb(kappa)


class EwaldConfig(_Section):
    """Lattice-sum numerics: η (1/nm, default √(π/A)), Ewald tolerance, short-range tolerance or
    explicit cut-off (nm)."""

    eta: float | None = Field(None, gt=0)
    tolerance: float = Field(1e-16, gt=0, lt=1)
    short_range_tolerance: float = Field(1e-6, gt=0, lt=1)
    short_range_cutoff: float | None = Field(None, gt=0, le=1e6)


#: Allowed range of ewald.eta around the default √(π/A) (factor either way).
ETA_FACTOR = 20.0
#: Most lattice vectors a real-space short-range sum may need (memory and time bound).
MAX_LATTICE_VECTORS = 1e6


class SystemConfig(_Section):
    """The physical system shared by all commands. ``material`` names an entry of the materials table
    (moire_cli/config/materials.py) whose values fill in every key the config does not give."""

    material: str | None = None
    crystal: CrystalConfig = CrystalConfig()
    moire_potential: MoirePotentialConfig
    mass: float = Field(0.5, ge=LIMITS["mass"][0], le=LIMITS["mass"][1], description="particle mass (m₀)")
    dielectric: DielectricConfig = DielectricConfig()
    interaction: InteractionConfig = InteractionConfig()
    ewald: EwaldConfig = EwaldConfig()

    @property
    def n_sites(self) -> int:
        """Sites per cell of the configured crystal."""
        c = self.crystal
        return len(BUILTIN_CRYSTALS[c.name][1]) if c.name in BUILTIN_CRYSTALS else len(c.basis)

    @property
    def pinned(self) -> bool:
        """A moiré potential acts on some site: V > 0 (or ħω_M given) and not every trap_scale 0.
        ``trap_scale`` all zero is the unpinned crystal (the same model as V = 0)."""
        mp = self.moire_potential
        ts = mp.trap_scale
        return (mp.V > 0 or mp.hbar_omega_M is not None) and (ts is None or any(x > 0 for x in ts))

    @model_validator(mode="after")
    def _check_commensurate(self) -> SystemConfig:
        """A pinned user crystal must be a superlattice of the moiré lattice: its cell vectors moiré
        lattice vectors. Otherwise the images of a site feel different potentials, the crystal is not
        periodic with its cell and its phonons are undefined (the potential is evaluated in the home
        cell); an unpinned crystal (V = 0) may have any cell."""
        c = self.crystal
        if c.name in BUILTIN_CRYSTALS or not self.pinned:
            return self
        m = np.asarray(c.cell, dtype=float) @ np.linalg.inv(MOIRE_LATTICE)
        dev = np.abs(m - np.round(m)).max(axis=1)
        for row in range(2):
            if dev[row] > SUPERLATTICE_TOL:
                raise ValueError(
                    f"crystal.cell vector {row + 1} {list(c.cell[row])} (units of a_M) is not a moiré lattice vector "
                    f"n1·A1 + n2·A2 (A1 = (1, 0), A2 = (1/2, √3/2); coefficients {np.round(m[row], 6).tolist()}): "
                    f"a pinned crystal must be a superlattice of the moiré lattice (set V = 0 for an unpinned one)"
                )
        return self

    @model_validator(mode="after")
    def _check_sites(self) -> SystemConfig:
        ts = self.moire_potential.trap_scale
        if ts is not None and len(ts) != self.n_sites:
            raise ValueError(
                f"moire_potential.trap_scale has {len(ts)} entries but crystal {self.crystal.name!r} "
                f"has {self.n_sites} site(s) per cell"
            )
        return self

    @model_validator(mode="after")
    def _check_lattice_sums(self) -> SystemConfig:
        """Keep the lattice sums finite in size: η within a factor of the default √(π/A), and a
        short-range cut-off that needs at most :data:`MAX_LATTICE_VECTORS` lattice vectors."""
        c = self.crystal
        cell = np.array(BUILTIN_CRYSTALS[c.name][0] if c.name in BUILTIN_CRYSTALS else c.cell, dtype=float)
        area = abs(np.linalg.det(cell)) * self.moire_potential.a_M**2
        eta0 = float(np.sqrt(np.pi / area))
        eta = self.ewald.eta
        if eta is not None and not 1 / ETA_FACTOR <= eta / eta0 <= ETA_FACTOR:
            raise ValueError(
                f"ewald.eta = {eta:g} 1/nm is more than {ETA_FACTOR:g}× away from the default √(π/A) = "
                f"{eta0:.4g} 1/nm (the result does not depend on η; only the cost does)"
            )
        r_cut = self.ewald.short_range_cutoff
        if r_cut is None and self.interaction.kind in ("keldysh", "dual-gate"):
            inter = self.interaction.build(self.dielectric.kappa)
            r_cut = inter.short_range_cutoff(self.ewald.short_range_tolerance)
        with np.errstate(over="ignore", divide="ignore"):
            n_vectors = np.pi * np.float64(r_cut) ** 2 / np.float64(area) if r_cut is not None else 0.0
        if n_vectors > MAX_LATTICE_VECTORS:
            raise ValueError(
                f"the short-range lattice sum would need ~{n_vectors:.2g} lattice vectors "
                f"(cut-off {r_cut:.4g} nm, cell {area:.4g} nm²; at most {MAX_LATTICE_VECTORS:g}): lower "
                f"ewald.short_range_cutoff or raise ewald.short_range_tolerance"
            )
        return self

    def build_model(self) -> LatticeModel:
        """The :class:`LatticeModel` this config describes (unrelaxed); potential None when unpinned
        (V = 0 or every trap_scale 0, see :attr:`pinned`)."""
        ts = self.moire_potential.trap_scale if self.pinned else None
        return LatticeModel(
            crystal=self.crystal.build(self.moire_potential.a_M, commensurate=self.pinned),
            potential=self.moire_potential.build(self.mass) if self.pinned else None,
            interaction=self.interaction.build(self.dielectric.kappa),
            mass=self.mass,
            trap_scale=None if ts is None else tuple(float(x) for x in ts),
            ewald_eta=self.ewald.eta,
            ewald_tol=self.ewald.tolerance,
            short_range_tol=self.ewald.short_range_tolerance,
            short_range_cutoff=self.ewald.short_range_cutoff,
        )
