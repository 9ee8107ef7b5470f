"""Config of `moire melt` (:class:`MeltConfig`, spec §7, §12): the system (moire_cli/config/system.py) with
the interlayer-exciton interactions (:class:`MeltInteractionConfig`, :class:`ExcitonConfig`), the Lindemann
analysis and its methods (:class:`MeltSection`: harmonic, self-consistent, Monte Carlo) and the sweep grid
(:meth:`MeltConfig.sweep_points`)."""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from moire_cli.config.common import LIMITS, ConfigError, _Section
from moire_cli.config.loading import _set_dotted, config_from_dict
from moire_cli.config.system import InteractionConfig, SystemConfig
from moire_cli.dynamics import LatticeModel
from moire_cli.potentials import PairInteraction

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
