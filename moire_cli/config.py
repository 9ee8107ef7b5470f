"""Validated configs for `moire` commands (pydantic, unknown keys rejected).

Shared sub-models describe the physical system and are reused by every command:
``crystal`` (:class:`CrystalConfig`), ``moire_potential`` (:class:`MoirePotentialConfig`),
``dielectric`` (:class:`DielectricConfig`), ``interaction`` (:class:`InteractionConfig`),
``ewald`` (:class:`EwaldConfig`), gathered in :class:`SystemConfig` with ``build_model()``.
A command config subclasses :class:`SystemConfig` and adds its own sections
(:class:`PhononsConfig`: ``path``, ``mesh``, ``output``). :func:`load_config` resolves
defaults < YAML < ``--set key=value`` for any such class.

Units: nm, meV, m₀, degrees for ψ.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class ConfigError(ValueError):
    """A user-facing configuration problem (one line, names the key)."""


#: The range of every physical magnitude (inclusive; units nm, meV, m₀, K, degrees). Far beyond any
#: moiré system, and inside what double precision computes without overflow or loss (issue 15
#: item 12: 1e308-sized inputs crashed the numerics). Documented in docs/moire-inputs.md.
LIMITS: dict[str, tuple[float, float]] = {
    "a_M": (1e-2, 1e5),          # moiré period (nm)
    "V": (0.0, 1e4),             # moiré amplitude and direct ħω_M (meV)
    "psi_deg": (0.0, 3600.0),    # |ψ| (degrees)
    "trap_scale": (0.0, 1e3),    # per-site multiplier of Δ
    "mass": (1e-3, 1e3),         # particle / electron / hole mass (m₀)
    "epsilon": (1.0, 1e3),       # relative permittivities
    "length": (1e-3, 1e4),       # r0, r0_1, r0_2, d, d_g (nm)
    "temperature": (0.0, 1e6),   # temperatures, t_max, phase_temperature (K)
    "frac": (0.0, 100.0),        # |fractional coordinate| of an explicit path point
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info):
        """YAML true/false is not a number, also inside lists (pydantic would read `mass: true` as
        1.0 and `size: [true, 6]` as (1, 6))."""
        annotation = str(cls.model_fields[info.field_name].annotation)
        if "bool" in annotation:
            return value
        if isinstance(value, dict) and annotation.startswith("dict["):  # e.g. sweep: {a_M: [true]}
            found = next((b for v in value.values() if (b := _find_bool(v)) is not None), None)
        else:
            found = _find_bool(value)
        if found is not None:
            raise ValueError(f"the boolean {str(found).lower()} is not a valid value here")
        return value


def _find_bool(value, depth: int = 0) -> bool | None:
    """The first bool in ``value`` or in a list/tuple inside it (nested sections check themselves)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and depth < 8:
        for v in value:
            if (b := _find_bool(v, depth + 1)) is not None:
                return b
    return None


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
    """Dielectric environment: κ = (ε_top + ε_bottom)/2."""

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
    """The physical system shared by all commands."""

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


class PathPoint(_Section):
    label: str
    frac: tuple[float, float]

    @field_validator("frac")
    @classmethod
    def _bounded(cls, frac):
        hi = LIMITS["frac"][1]
        if max(abs(x) for x in frac) > hi:
            raise ValueError(f"fractional coordinates must be within ±{hi:g} (reciprocal lattice vectors)")
        return frac


class PathConfig(_Section):
    """Band path: names of high-symmetry points (G, M, K, K' or G, X, S, Y) and/or explicit
    {label, frac} points, "|" between two pieces (a break, as in phonopy; see band_path.py);
    None = Γ–M–K–Γ (hexagonal) or Γ–X–S–Y–Γ (rectangular)."""

    points: list[str | PathPoint] | None = None
    n_per_segment: int = Field(60, ge=2, le=100000)

    @model_validator(mode="after")
    def _check(self) -> PathConfig:
        if self.points is not None and len(self.points) < 2:
            raise ValueError("path.points needs at least two points")
        return self

    def spec(self) -> list | None:
        if self.points is None:
            return None
        return [p if isinstance(p, str) else (p.label, np.array(p.frac)) for p in self.points]


class MeshConfig(_Section):
    """Monkhorst–Pack mesh for the DOS and the stability check; Gaussian smearing (meV, None =
    1/100 of the frequency range)."""

    size: tuple[int, int] = (24, 24)
    smearing_meV: float | None = Field(None, gt=0)
    n_energies: int = Field(400, ge=10, le=100000)

    @model_validator(mode="after")
    def _check(self) -> MeshConfig:
        if min(self.size) < 1 or max(self.size) > 2048:
            raise ValueError("mesh.size entries must be between 1 and 2048")
        return self


class OutputConfig(_Section):
    frequency_unit: Literal["meV", "THz", "cm-1"] = "meV"
    plot: bool = True


class ChiralityConfig(_Section):
    """Chiral phonons (spec §6): perpendicular magnetic field B ẑ (tesla, either sign), the carrier
    charge for the Lorentz force (−1 electrons, +1 holes; None = from ``moire_potential.carrier``),
    the temperature of the thermal totals (K) and the band (0-based, ascending) whose Berry curvature
    is mapped over the Brillouin zone."""

    magnetic_field_T: float = Field(0.0, ge=-200, le=200, description="B along +z (T)")
    charge_sign: Literal[-1, 1] | None = None
    temperature_K: float = Field(0.0, ge=0, le=1e5)
    berry_band: int = Field(0, ge=0)

    def carrier_charge(self, carrier: str) -> int:
        """The charge sign in use: explicit, or −1 for electrons and +1 for holes."""
        if self.charge_sign is not None:
            return int(self.charge_sign)
        return -1 if carrier == "electron" else 1


class OpticsConfig(_Section):
    """Optical activity of the Γ phonons (spec §9; opt-in: give ``optics: {}``): Lorentzian half width
    (meV) and the photon-energy grid of absorption.csv (None = the Γ lines ± 10 widths)."""

    broadening_meV: float = Field(0.2, gt=0, le=1000)
    n_energies: int = Field(801, ge=10, le=100000)
    energy_range_meV: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> OpticsConfig:
        if self.energy_range_meV is not None and not 0 <= self.energy_range_meV[0] < self.energy_range_meV[1]:
            raise ValueError("optics.energy_range_meV must be [low, high] with 0 ≤ low < high")
        return self


class AnharmonicDecayConfig(_Section):
    """Three-phonon decay of the Γ phonons into (q, s₁) + (−q, s₂) (spec §10; opt-in): its own full mesh,
    the Gaussian width σ (meV) of energy conservation, the temperatures (K) of the thermal factor
    1 + n₁ + n₂ (the first one is used for decay.png), and whether to resolve the products' Berry
    curvature (five times the mode work)."""

    mesh: tuple[int, int] = (24, 24)
    sigma_meV: float = Field(0.3, gt=0, le=100)
    temperatures_K: list[float] = Field(default_factory=lambda: [0.0, 10.0, 30.0], min_length=1, max_length=20)
    berry_curvature: bool = False

    @model_validator(mode="after")
    def _check(self) -> AnharmonicDecayConfig:
        if min(self.mesh) < 2 or max(self.mesh) > 192:
            raise ValueError("anharmonic_decay.mesh entries must be between 2 and 192")
        if any(not 0 <= t <= 1e5 for t in self.temperatures_K):
            raise ValueError("anharmonic_decay.temperatures_K must lie in [0, 1e5] K")
        return self


class ThermalHallConfig(_Section):
    """Phonon thermal Hall conductivity κ_xy(T) (spec §11; opt-in): num temperatures from start to stop (K),
    on ``mesh`` (None = mesh.size, reusing the chirality mesh)."""

    start_K: float = Field(1.0, ge=0)
    stop_K: float = Field(100.0, gt=0, le=1e5)
    num: int = Field(60, ge=2, le=10000)
    mesh: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _check(self) -> ThermalHallConfig:
        if self.start_K >= self.stop_K:
            raise ValueError("thermal_hall.start_K must be below stop_K")
        if self.mesh is not None and (min(self.mesh) < 2 or max(self.mesh) > 512):
            raise ValueError("thermal_hall.mesh entries must be between 2 and 512")
        return self

    def values(self) -> np.ndarray:
        return np.linspace(self.start_K, self.stop_K, self.num)


#: Most (mesh q-points × sites²) of one phonons run (two sites, 128×128: 0.2 GB, 12 s measured).
MAX_MESH_WORK = 256 * 256 * 4


class PhononsConfig(SystemConfig):
    """Config of `moire phonons`."""

    relax: bool = True
    path: PathConfig = PathConfig()
    mesh: MeshConfig = MeshConfig()
    output: OutputConfig = OutputConfig()
    chirality: ChiralityConfig = ChiralityConfig()
    optics: OpticsConfig | None = None
    anharmonic_decay: AnharmonicDecayConfig | None = None
    thermal_hall: ThermalHallConfig | None = None

    @model_validator(mode="after")
    def _check_mesh_size(self) -> PhononsConfig:
        n1, n2 = self.mesh.size
        if n1 * n2 * self.n_sites**2 > MAX_MESH_WORK:
            raise ValueError(
                f"mesh.size {n1}×{n2} with {self.n_sites} site(s) per cell is too large (q-points × sites² = "
                f"{n1 * n2 * self.n_sites**2:.3g}, at most {MAX_MESH_WORK:.3g})"
            )
        return self

    @model_validator(mode="after")
    def _check_path_size(self) -> PhononsConfig:
        n_points = 5 if self.path.points is None else len(self.path.points)  # default: at most Γ–X–S–Y–Γ
        n_q = (n_points - 1) * (self.path.n_per_segment - 1) + 1
        if n_q * self.n_sites**2 > MAX_MESH_WORK:
            raise ValueError(
                f"path: {n_q} q-points with {self.n_sites} site(s) per cell is too large (q-points × sites² = "
                f"{n_q * self.n_sites**2:.3g}, at most {MAX_MESH_WORK:.3g}); lower path.n_per_segment"
            )
        return self

    @model_validator(mode="after")
    def _check_berry_band(self) -> PhononsConfig:
        if self.chirality.berry_band >= 2 * self.n_sites:
            raise ValueError(
                f"chirality.berry_band = {self.chirality.berry_band} but the crystal has only "
                f"{2 * self.n_sites} bands (0-based)"
            )
        return self


# ------------------------------------------------------------------ loading
C = TypeVar("C", bound=BaseModel)


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    """'a.b=value' strings -> (dotted key, YAML-scalar value)."""
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set: bad key {key!r}")
        try:
            value = _load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None)
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}" + (f" ({problem})" if problem else "")) from None
        out.append((key, value))
    return out


_UNION_TAGS = {"str", "int", "float", "bool", "PathPoint", "SweepRange", "TemperatureRange"}


def _format_error(err: ValidationError) -> str:
    """One line naming the key: the most specific (deepest) of pydantic's errors; on a tie, not the
    'wrong type' error of another branch of a union (list versus range)."""
    errors = err.errors()
    e = max(errors, key=lambda x: (len(x["loc"]), not x["type"].endswith("_type")))
    loc = ".".join(
        str(x) for x in e["loc"] if not (str(x) in _UNION_TAGS or "[" in str(x) or str(x).startswith("function-"))
    )
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"config: {loc}: {msg}" if loc else f"config: {msg}"  # whole-model checks name their keys


def config_from_dict(data: dict, cls: type[C] = PhononsConfig, overrides: list[str] | None = None) -> C:
    """Validate ``data`` (+ dotted overrides) as ``cls``. Raises ConfigError (one line)."""
    data = dict(data)
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


#: Deepest nesting of a config (sections, lists) and most values after expanding YAML aliases.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 1_000_000


class _ConfigLoader(yaml.SafeLoader):
    """A safe loader for configs that reads the YAML 1.2 core schema instead of PyYAML's YAML 1.1:
    only true/false are booleans (``no``, ``on``, ``yes``, ``off`` stay strings), no sexagesimal
    numbers (``1:30`` is a string), no timestamps, ints decimal / 0o octal / 0x hex (``010`` is 10);
    rejects a key given twice in one mapping (PyYAML keeps the last one silently), nesting deeper than
    :data:`MAX_YAML_DEPTH` and integers too long for Python (over 4300 digits), each with the line."""

    yaml_implicit_resolvers: dict = {}
    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:  # explicit scalar keys only (merge keys '<<' may repeat)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        try:
            body = text.lstrip("+-")
            base = 8 if body.startswith("0o") else 16 if body.startswith("0x") else 10
            return int(text, base)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"integer with {len(text)} characters is too long", node.start_mark) from None


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)
for _tag, _regexp, _first in (  # YAML 1.2 core schema (yaml.org/spec/1.2.2, §10.3.2)
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
    ("merge", r"^(?:<<)$", "<"),
):
    _ConfigLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_regexp), list(_first))


def _count_values(obj, limit: int = MAX_YAML_VALUES) -> int:
    """Number of values in ``obj`` counting shared (aliased) objects each time, stopping at ``limit``."""
    count, stack = 0, [obj]
    while stack and count <= limit:
        cur = stack.pop()
        count += 1
        if isinstance(cur, dict):
            stack.extend(cur.keys())
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return count


def _load_yaml(text: str):
    """Parse ``text`` with :class:`_ConfigLoader`. Raises yaml.YAMLError (with a mark where known)."""
    data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    if _count_values(data) > MAX_YAML_VALUES:
        raise yaml.YAMLError(f"more than {MAX_YAML_VALUES:g} values after expanding aliases")
    return data


def load_config(path: Path | str, cls: type[C] = PhononsConfig, overrides: list[str] | None = None) -> C:
    """Read YAML ``path`` and resolve defaults < YAML < overrides as ``cls``.

    Raises:
        ConfigError: missing/unreadable file, malformed YAML, not a mapping, validation failure.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or (str(err) if mark is None else None)
        raise ConfigError(f"malformed YAML in {path}{where}" + (f": {problem}" if problem else "")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping of sections")
    return config_from_dict(data, cls, overrides)


# ------------------------------------------------------------------ moire melt
#: Interlayer-exciton interactions (spec §3; moire_cli/excitons.py).
EXCITON_INTERACTIONS = ("dipole-bare", "dipole-twosheet", "dipole-lumped")


class MeltInteractionConfig(InteractionConfig):
    """Pair interaction for `moire melt`: the electron ones (coulomb, keldysh, dual-gate) and the
    interlayer-exciton dipoles (spec §3): ``d`` (nm, electron–hole layer separation) and the layer
    polarizabilities ``r0_1``, ``r0_2`` (nm; each defaults to ``r0``, then 0)."""

    kind: Literal["coulomb", "keldysh", "dual-gate", "dipole-bare", "dipole-twosheet", "dipole-lumped"] = "coulomb"
    d: float | None = Field(None, ge=LIMITS["length"][0], le=LIMITS["length"][1], description="exciton electron–hole layer separation (nm)")
    r0_1: float | None = Field(None, ge=0, le=LIMITS["length"][1], description="polarizability length of the electron layer (nm)")
    r0_2: float | None = Field(None, ge=0, le=LIMITS["length"][1], description="polarizability length of the hole layer (nm)")

    @property
    def is_exciton(self) -> bool:
        return self.kind in EXCITON_INTERACTIONS

    @model_validator(mode="after")
    def _check_exciton(self) -> MeltInteractionConfig:
        if self.is_exciton and self.d is None:
            raise ValueError(f"interaction.d (nm) is required for kind {self.kind!r}")
        return self

    def screening_lengths(self) -> tuple[float, float]:
        """(r₀₁, r₀₂) in nm for the exciton models."""
        r0 = self.r0 or 0.0
        return (self.r0_1 if self.r0_1 is not None else r0, self.r0_2 if self.r0_2 is not None else r0)

    def build(self, kappa: float) -> PairInteraction:
        if self.is_exciton:
            from moire_cli.excitons import exciton_interaction

            return exciton_interaction(self.kind, kappa, self.d, *self.screening_lengths())
        return super().build(kappa)


class ExcitonConfig(_Section):
    """An interlayer exciton: electron (layer 1) and hole (layer 2) masses; M = m_e + m_h (m₀)."""

    m_e: float = Field(ge=LIMITS["mass"][0], le=LIMITS["mass"][1], description="electron mass (m₀)")
    m_h: float = Field(ge=LIMITS["mass"][0], le=LIMITS["mass"][1], description="hole mass (m₀)")

    @property
    def mass(self) -> float:
        return self.m_e + self.m_h


class TemperatureRange(_Section):
    """num temperatures evenly spaced from start to stop (K)."""

    start: float = Field(0.0, ge=0, le=LIMITS["temperature"][1])
    stop: float = Field(gt=0, le=LIMITS["temperature"][1])
    num: int = Field(61, ge=2, le=100000)

    def values(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.num)


class MeltMeshConfig(_Section):
    """Monkhorst–Pack meshes n×n: start, 2·start, 4·start, … up to max, until ⟨u²⟩ changes by less
    than ``tolerance`` (relative)."""

    start: int = Field(12, ge=2, le=1024)
    max: int = Field(48, ge=2, le=1024)
    tolerance: float = Field(1e-3, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> MeltMeshConfig:
        if self.max < self.start:
            raise ValueError("melt.mesh.max must be ≥ melt.mesh.start")
        return self

    def sizes(self) -> list[int]:
        out = [self.start]
        while out[-1] * 2 <= self.max:
            out.append(out[-1] * 2)
        return out


#: `melt.method` values: harmonic phonons (spec §7), self-consistent phonons and classical Monte Carlo (§12).
MELT_METHODS = ("harmonic", "self-consistent", "monte-carlo")
MeltMethod = Literal["harmonic", "self-consistent", "monte-carlo"]


class SCHASection(_Section):
    """Self-consistent harmonic approximation (moire_cli/scha.py): bond shells whose force constants
    are averaged, fixed-point iterations per solve, convergence tolerance, relative accuracy of T*."""

    pair_shells: int = Field(1, ge=0, le=3)
    max_iter: int = Field(60, ge=5, le=1000)
    tolerance: float = Field(1e-9, gt=0, lt=1e-3)
    t_rtol: float = Field(1e-3, gt=0, lt=0.1)


class MonteCarloSection(_Section):
    """Classical Monte Carlo (moire_cli/montecarlo.py): supercell (cells along a1, a2), production
    and equilibration sweeps, blocks for the error bars, sweeps between Ψ₆ measurements, base seed,
    temperatures (K > 0; default: the melt temperatures above 0 K)."""

    supercell: tuple[int, int] = (12, 12)
    sweeps: int = Field(2000, ge=10, le=10**7)
    equilibration: int = Field(500, ge=0, le=10**7)
    blocks: int = Field(20, ge=4, le=1000)
    psi6_every: int = Field(10, ge=1)
    seed: int = Field(0, ge=0)
    temperatures: list[float] | TemperatureRange | None = None

    @model_validator(mode="after")
    def _check(self) -> MonteCarloSection:
        if min(self.supercell) < 2 or max(self.supercell) > 64:
            raise ValueError("melt.monte_carlo.supercell: 2 to 64 cells along each lattice vector")
        if self.sweeps // self.psi6_every < self.blocks:
            raise ValueError("melt.monte_carlo: sweeps / psi6_every must be at least blocks (Ψ₆ measurements per block)")
        t = self.temperature_values()
        hi = LIMITS["temperature"][1]
        if t is not None and (t.size == 0 or np.any(~np.isfinite(t)) or np.any(t <= 0) or np.any(t > hi)):
            raise ValueError(f"melt.monte_carlo.temperatures must be values above 0 and at most {hi:g} K")
        return self

    def temperature_values(self) -> np.ndarray | None:
        t = self.temperatures
        if t is None:
            return None
        return t.values() if isinstance(t, TemperatureRange) else np.asarray(t, dtype=float)


class MeltSection(_Section):
    """Lindemann analysis: temperature grid (list or range, K), critical ratio L_c, meshes; the
    method(s) (harmonic default; self-consistent; monte-carlo) with their settings, and where the
    Monte Carlo points run (``scheduler``: None = a local Dask cluster of ``workers`` processes,
    "serial" = this process, or a Dask scheduler address)."""

    temperatures: list[float] | TemperatureRange = TemperatureRange(stop=300.0)
    lindemann_critical: float = Field(0.3, gt=0, lt=1, description="critical Lindemann ratio L_c")
    mesh: MeltMeshConfig = MeltMeshConfig()
    relax: bool = True
    t_max: float = Field(1e4, gt=0, le=LIMITS["temperature"][1], description="upper end of the T_m search (K)")
    method: MeltMethod | list[MeltMethod] = "harmonic"
    scha: SCHASection = SCHASection()
    monte_carlo: MonteCarloSection = MonteCarloSection()
    scheduler: str | None = None
    workers: int | None = Field(None, ge=1, le=1024)

    def methods(self) -> list[str]:
        """The requested methods, without repeats, in the order of :data:`MELT_METHODS`."""
        m = [self.method] if isinstance(self.method, str) else list(self.method)
        return [k for k in MELT_METHODS if k in m]

    @model_validator(mode="after")
    def _check(self) -> MeltSection:
        t = self.temperature_values()
        hi = LIMITS["temperature"][1]
        if t.size == 0 or np.any(t < 0) or not np.all(np.isfinite(t)) or np.any(t > hi):
            raise ValueError(f"melt.temperatures must be values between 0 and {hi:g} K")
        if t.size > MAX_TEMPERATURES:
            raise ValueError(f"melt.temperatures: {t.size} values (at most {MAX_TEMPERATURES})")
        if not self.methods():
            raise ValueError(f"melt.method: give one or more of {', '.join(MELT_METHODS)}")
        return self

    def temperature_values(self) -> np.ndarray:
        t = self.temperatures
        return t.values() if isinstance(t, TemperatureRange) else np.asarray(t, dtype=float)


class SweepRange(_Section):
    """num values from start to stop, evenly spaced (or geometrically with log: true)."""

    start: float
    stop: float
    num: int = Field(ge=1, le=10000)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> SweepRange:
        if self.log and (self.start <= 0 or self.stop <= 0):
            raise ValueError("a log sweep needs start and stop > 0")
        return self

    def values(self) -> list[float]:
        if self.log:
            return np.geomspace(self.start, self.stop, self.num).tolist()
        return np.linspace(self.start, self.stop, self.num).tolist()


#: Sweep keys and the config entries each one sets (any other dotted config key works as well).
SWEEP_ALIASES: dict[str, tuple[str, ...]] = {
    "a_M": ("moire_potential.a_M",),
    "V": ("moire_potential.V",),
    "psi_deg": ("moire_potential.psi_deg",),
    "hbar_omega_M": ("moire_potential.hbar_omega_M",),
    "epsilon": ("dielectric.epsilon_top", "dielectric.epsilon_bottom"),
    "kappa": ("dielectric.epsilon_top", "dielectric.epsilon_bottom"),
    "r0": ("interaction.r0",),
    "r0_1": ("interaction.r0_1",),
    "r0_2": ("interaction.r0_2",),
    "d": ("interaction.d",),
    "d_g": ("interaction.d_g",),
    "interaction": ("interaction.kind",),
    "lindemann_critical": ("melt.lindemann_critical",),
    "mass": ("mass",),
}
_MAX_SWEEP_POINTS = 10000
#: Most temperatures of one grid, and most rows (sweep points × temperatures) of lindemann.csv.
MAX_TEMPERATURES = 100000
MAX_TABLE_ROWS = 2_000_000
#: The only melt.* key that is used per sweep point (all others set the whole run).
PER_POINT_MELT_KEYS = ("melt.lindemann_critical",)
#: Most (sweep points × finest mesh q-points × sites²) of one melt run (memory bound, estimated).
MAX_MELT_WORK = 2**24


class MeltOutputConfig(_Section):
    """Plots on/off; the temperature (K) of the two-parameter phase diagram (default: the middle
    of the temperature grid)."""

    plot: bool = True
    phase_temperature: float | None = Field(None, ge=0, le=LIMITS["temperature"][1])


class MeltConfig(SystemConfig):
    """Config of `moire melt`: the system (as for phonons; ``exciton`` for an interlayer-exciton
    crystal of mass m_e + m_h), the Lindemann analysis and a sweep (outer product of its lists)."""

    interaction: MeltInteractionConfig = MeltInteractionConfig()
    exciton: ExcitonConfig | None = None
    melt: MeltSection = MeltSection()
    sweep: dict[str, list[float | str] | SweepRange] = Field(default_factory=dict)
    output: MeltOutputConfig = MeltOutputConfig()

    @model_validator(mode="after")
    def _check_melt(self) -> MeltConfig:
        if self.exciton is not None and "mass" in self.model_fields_set:
            raise ValueError("give exciton.m_e and exciton.m_h, not mass, for an exciton crystal (M = m_e + m_h)")
        if self.interaction.is_exciton and self.exciton is None:
            raise ValueError(f"interaction {self.interaction.kind!r} is for excitons: add an exciton section (m_e, m_h)")
        if self.exciton is not None and not self.interaction.is_exciton:
            raise ValueError(
                f"an exciton crystal needs a dipole interaction ({', '.join(EXCITON_INTERACTIONS)}), "
                f"not {self.interaction.kind!r}"
            )
        for key, values in self.sweep.items():
            if key not in SWEEP_ALIASES and "." not in key:
                raise ValueError(f"sweep.{key}: unknown sweep key; use one of {sorted(SWEEP_ALIASES)} or a dotted config key")
            if key.split(".")[0] == "sweep":
                raise ValueError(f"sweep.{key}: cannot sweep the sweep")
            if isinstance(values, list) and not values:
                raise ValueError(f"sweep.{key}: empty list")
        return self

    def model_inputs(self) -> str:
        """The inputs one sweep point's result depends on, as canonical JSON: what the model
        actually uses (r₀ only for keldysh and the screened dipoles, d_g only for dual-gate, ψ and
        the trap only when pinned, V only without ħω_M) and L_c. Two points with equal
        ``model_inputs`` give identical rows."""
        import json

        mp, inter = self.moire_potential, self.interaction
        used: dict = {"kind": inter.kind}
        if inter.kind == "keldysh":
            used["r0"] = inter.r0
        elif inter.kind == "dual-gate":
            used["d_g"] = inter.d_g
        elif inter.is_exciton:
            used["d"] = inter.d
            r01, r02 = inter.screening_lengths()
            if inter.kind == "dipole-twosheet":
                used["r0_1"], used["r0_2"] = r01, r02
            elif inter.kind == "dipole-lumped":
                used["r0"] = r01 + r02
        pot: dict = {"a_M": mp.a_M}
        if self.pinned:
            pot.update(psi_deg=mp.psi_deg % 360, carrier=mp.carrier, harmonic_only=mp.harmonic_only,
                       trap_scale=mp.trap_scale)
            pot.update({"hbar_omega_M": mp.hbar_omega_M} if mp.hbar_omega_M is not None else {"V": mp.V})
        return json.dumps({"crystal": self.crystal.model_dump(), "potential": pot, "mass": self.effective_mass,
                           "kappa": self.dielectric.kappa, "interaction": used, "ewald": self.ewald.model_dump(),
                           "lindemann_critical": self.melt.lindemann_critical}, sort_keys=True)

    @property
    def effective_mass(self) -> float:
        """Particle mass (m₀): m_e + m_h for excitons, else ``mass``."""
        return self.exciton.mass if self.exciton is not None else self.mass

    def build_model(self) -> LatticeModel:
        """The unrelaxed :class:`LatticeModel` (exciton mass M = m_e + m_h where applicable)."""
        return SystemConfig.build_model(self.model_copy(update={"mass": self.effective_mass}))

    def sweep_values(self) -> dict[str, list]:
        """{sweep key: list of values} in config order."""
        return {k: (v.values() if isinstance(v, SweepRange) else list(v)) for k, v in self.sweep.items()}

    def sweep_points(self) -> list[tuple[dict, MeltConfig]]:
        """Every point of the sweep grid as ({key: value}, validated config without sweep).

        Raises:
            ConfigError: too many points, or a point whose config is invalid (named).
        """
        import itertools

        values = self.sweep_values()
        for key in values:
            for target in SWEEP_ALIASES.get(key, (key,)):
                if target.split(".")[0] in ("melt", "output") and target not in PER_POINT_MELT_KEYS:
                    raise ConfigError(
                        f"sweep.{key}: {target} applies to the whole run (temperature grid, meshes, T_m search, "
                        f"output), not to one sweep point; set it once outside sweep"
                    )
        n = int(np.prod([len(v) for v in values.values()])) if values else 1
        if n > _MAX_SWEEP_POINTS:
            raise ConfigError(f"sweep: {n} points (more than {_MAX_SWEEP_POINTS})")
        n_t = self.melt.temperature_values().size
        if n * n_t > MAX_TABLE_ROWS:
            raise ConfigError(
                f"sweep: {n} point(s) × {n_t} temperatures = {n * n_t:.3g} rows of lindemann.csv (at most "
                f"{MAX_TABLE_ROWS:.3g}); fewer sweep points or temperatures"
            )
        work = n * self.melt.mesh.max**2 * self.n_sites**2
        if work > MAX_MELT_WORK:  # every point's spectrum on the finest mesh is held at once
            raise ConfigError(
                f"sweep: {n} point(s) × melt.mesh.max {self.melt.mesh.max}² × {self.n_sites} site(s)² = {work:.3g} "
                f"is too large (at most {MAX_MELT_WORK:.3g}); fewer sweep points or a smaller melt.mesh.max"
            )
        base = self.model_dump(exclude_unset=True, exclude={"sweep"})
        points = []
        for combo in itertools.product(*values.values()):
            labels = dict(zip(values, combo, strict=True))
            data = copy.deepcopy(base)
            for key, value in labels.items():
                for target in SWEEP_ALIASES.get(key, (key,)):
                    _set_dotted(data, target, value)
            try:
                cfg = config_from_dict(data, MeltConfig)
            except ConfigError as err:
                where = ", ".join(f"{k}={v}" for k, v in labels.items())
                raise ConfigError(f"sweep point ({where}): {str(err).removeprefix('config: ')}") from None
            points.append((labels, cfg))
        _check_sweep_points(points, values)
        return points


def _check_sweep_points(points: list[tuple[dict, MeltConfig]], values: dict[str, list]) -> None:
    """Refuse a sweep whose points cannot share one run (different numbers of sites per cell) or a
    swept key that changes nothing: every pair of points that differ only in that key has the same
    :meth:`MeltConfig.model_inputs` (e.g. r0 for a Coulomb or bare-dipole interaction, V when
    hbar_omega_M is given, ψ of an unpinned crystal).

    Raises:
        ConfigError: one line naming the key.
    """
    sites = {p.n_sites for _, p in points}
    if len(sites) > 1:
        keys = ", ".join(f"sweep.{k}" for k in values)
        raise ConfigError(f"{keys}: the sweep points have {sorted(sites)} sites per cell; one run needs one "
                          f"crystal size (run each crystal separately)")
    inputs = [p.model_inputs() for _, p in points]
    for key, vals in values.items():
        if len({repr(v) for v in vals}) < 2:
            continue
        groups: dict[str, set[str]] = {}
        for (labels, _), inp in zip(points, inputs, strict=True):
            rest = repr(sorted((k, repr(v)) for k, v in labels.items() if k != key))
            groups.setdefault(rest, set()).add(inp)
        if all(len(g) == 1 for g in groups.values()):
            cfg = points[0][1]
            inter, mp = cfg.interaction, cfg.moire_potential
            target = SWEEP_ALIASES.get(key, (key,))[0]
            if target.startswith("interaction."):
                why = f"interaction {inter.kind!r} does not use {target.split('.', 1)[1]}"
            elif target == "moire_potential.V" and mp.hbar_omega_M is not None:
                why = "moire_potential.hbar_omega_M sets V"
            elif target.startswith("moire_potential.") and not cfg.pinned:
                why = "the crystal is unpinned (V = 0 or every trap_scale 0)"
            else:
                why = "no input of the model depends on it"
            raise ConfigError(f"sweep.{key}: every value gives the same model ({why}); remove it from sweep")
