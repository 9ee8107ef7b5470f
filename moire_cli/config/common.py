"""Shared pieces of the `moire` configs: :class:`ConfigError` (the one-line user error),
:data:`LIMITS` (the range of every physical magnitude) and :class:`_Section` (the pydantic base of every
section: unknown keys rejected, frozen, no inf/nan, no YAML boolean read as a number)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


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
