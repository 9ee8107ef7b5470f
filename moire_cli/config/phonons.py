"""Config of `moire phonons` (:class:`PhononsConfig`): the system of moire_cli/config/system.py plus the
band ``path``, the ``mesh``, ``output``, ``chirality`` (spec §6) and the opt-in ``optics`` (§9),
``anharmonic_decay`` (§10) and ``thermal_hall`` (§11) sections."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from moire_cli.config.common import LIMITS, _Section
from moire_cli.config.system import SystemConfig


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
