"""Validated configs for `moire` commands (pydantic, unknown keys rejected), one module per concept:

- ``common``: :class:`ConfigError` (one line, names the key), :data:`LIMITS`, the section base class;
- ``system``: the physical system every command shares (crystal, moiré potential, dielectric,
  interaction, Ewald numerics) in :class:`SystemConfig` with ``build_model()``;
- ``materials``: the table of material parameters with their sources (``material: wse2_ws2``);
- ``phonons``: :class:`PhononsConfig` (`moire phonons`: path, mesh, output, chirality, optics, …);
- ``melt``: :class:`MeltConfig` (`moire melt`: excitons, Lindemann analysis, methods, sweep);
- ``loading``: YAML, ``--set`` overrides and :func:`load_config`, which resolves
  defaults < material < YAML < ``--set key=value`` for any config class.

The names below are the package's public API (what the commands and tests import).
Units: nm, meV, m₀, degrees for ψ.
"""

from moire_cli.config.common import LIMITS, ConfigError
from moire_cli.config.loading import config_from_dict, load_config, parse_overrides
from moire_cli.config.materials import MATERIALS, material_defaults
from moire_cli.config.melt import (
    EXCITON_INTERACTIONS,
    MAX_MELT_WORK,
    MELT_METHODS,
    SWEEP_ALIASES,
    ExcitonConfig,
    MeltConfig,
    MeltInteractionConfig,
    MeltSection,
    MonteCarloSection,
    SCHASection,
    SweepRange,
    TemperatureRange,
)
from moire_cli.config.phonons import (
    MAX_MESH_WORK,
    AnharmonicDecayConfig,
    ChiralityConfig,
    MeshConfig,
    OpticsConfig,
    PathConfig,
    PhononsConfig,
    ThermalHallConfig,
)
from moire_cli.config.system import (
    CrystalConfig,
    DielectricConfig,
    EwaldConfig,
    InteractionConfig,
    MoirePotentialConfig,
    SystemConfig,
)

__all__ = [
    "EXCITON_INTERACTIONS",
    "LIMITS",
    "MATERIALS",
    "MAX_MELT_WORK",
    "MAX_MESH_WORK",
    "MELT_METHODS",
    "SWEEP_ALIASES",
    "AnharmonicDecayConfig",
    "ChiralityConfig",
    "ConfigError",
    "CrystalConfig",
    "DielectricConfig",
    "EwaldConfig",
    "ExcitonConfig",
    "InteractionConfig",
    "MeltConfig",
    "MeltInteractionConfig",
    "MeltSection",
    "MeshConfig",
    "MoirePotentialConfig",
    "MonteCarloSection",
    "OpticsConfig",
    "PathConfig",
    "PhononsConfig",
    "SCHASection",
    "SweepRange",
    "SystemConfig",
    "TemperatureRange",
    "ThermalHallConfig",
    "config_from_dict",
    "load_config",
    "material_defaults",
    "parse_overrides",
]
