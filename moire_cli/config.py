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

from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moire_cli.crystals import BUILTIN_CRYSTALS, Crystal, build_crystal
from moire_cli.dynamics import LatticeModel
from moire_cli.potentials import Coulomb, DualGate, Keldysh, MoirePotential, PairInteraction
from moire_cli.units import HBAR2_OVER_M0_MEV_NM2


class ConfigError(ValueError):
    """A user-facing configuration problem (one line, names the key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
            if abs(np.linalg.det(np.array(self.cell))) < 1e-9:
                raise ValueError("crystal.cell vectors are linearly dependent")
        return self

    def build(self, a_M: float) -> Crystal:
        return build_crystal(self.name, a_M, self.cell, self.basis)


class MoirePotentialConfig(_Section):
    """Moiré potential Δ(r) = 2V Σ cos(b_j·r + ψ) (spec §2). V = 0 means unpinned.

    ``hbar_omega_M`` (meV), when given, sets V from ħω_M = (4πħ/a_M)√(V c(ψ)/m) instead of ``V``.
    """

    a_M: float = Field(gt=0, description="moiré period (nm)")
    V: float = Field(0.0, ge=0, description="amplitude (meV)")
    psi_deg: float = Field(0.0, description="phase ψ (degrees)")
    carrier: Literal["electron", "hole"] = "electron"
    harmonic_only: bool = False
    hbar_omega_M: float | None = Field(None, gt=0, description="direct ħω_M input (meV); overrides V")

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

    epsilon_top: float = Field(4.5, gt=0)
    epsilon_bottom: float = Field(4.5, gt=0)

    @property
    def kappa(self) -> float:
        return 0.5 * (self.epsilon_top + self.epsilon_bottom)


class InteractionConfig(_Section):
    """Pair interaction (spec §3): coulomb; keldysh with r0 (nm); dual-gate with d_g (nm)."""

    kind: Literal["coulomb", "keldysh", "dual-gate"] = "coulomb"
    r0: float | None = Field(None, gt=0, description="Keldysh screening length r₀ (nm)")
    d_g: float | None = Field(None, gt=0, description="gate distance d_g (nm)")

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
    short_range_cutoff: float | None = Field(None, gt=0)


class SystemConfig(_Section):
    """The physical system shared by all commands."""

    crystal: CrystalConfig = CrystalConfig()
    moire_potential: MoirePotentialConfig
    mass: float = Field(0.5, gt=0, description="particle mass (m₀)")
    dielectric: DielectricConfig = DielectricConfig()
    interaction: InteractionConfig = InteractionConfig()
    ewald: EwaldConfig = EwaldConfig()

    def build_model(self) -> LatticeModel:
        """The :class:`LatticeModel` this config describes (unrelaxed)."""
        return LatticeModel(
            crystal=self.crystal.build(self.moire_potential.a_M),
            potential=self.moire_potential.build(self.mass),
            interaction=self.interaction.build(self.dielectric.kappa),
            mass=self.mass,
            ewald_eta=self.ewald.eta,
            ewald_tol=self.ewald.tolerance,
            short_range_tol=self.ewald.short_range_tolerance,
            short_range_cutoff=self.ewald.short_range_cutoff,
        )


class PathPoint(_Section):
    label: str
    frac: tuple[float, float]


class PathConfig(_Section):
    """Band path: names of high-symmetry points (G, M, K, K' or G, X, S, Y) and/or explicit
    {label, frac} points; None = Γ–M–K–Γ (hexagonal) or Γ–X–S–Y–Γ (rectangular)."""

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


class PhononsConfig(SystemConfig):
    """Config of `moire phonons`."""

    relax: bool = True
    path: PathConfig = PathConfig()
    mesh: MeshConfig = MeshConfig()
    output: OutputConfig = OutputConfig()


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
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
        out.append((key, value))
    return out


_UNION_TAGS = {"str", "int", "float", "bool", "list[float]", "PathPoint"}


def _format_error(err: ValidationError) -> str:
    """One line naming the key: the most specific (deepest) of pydantic's errors."""
    errors = err.errors()
    e = max(errors, key=lambda x: len(x["loc"]))
    loc = ".".join(
        str(x) for x in e["loc"] if not (str(x) in _UNION_TAGS or str(x).startswith(("function-", "tuple[")))
    )
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"config: {loc or '<root>'}: {msg}"


def config_from_dict(data: dict, cls: type[C] = PhononsConfig, overrides: list[str] | None = None) -> C:
    """Validate ``data`` (+ dotted overrides) as ``cls``. Raises ConfigError (one line)."""
    data = dict(data)
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


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
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"malformed YAML in {path}{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping of sections")
    return config_from_dict(data, cls, overrides)
