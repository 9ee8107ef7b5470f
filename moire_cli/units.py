"""Physical constants and unit conversions for `moire` (the only module that holds a constant).

Every constant comes from :mod:`scipy.constants` (CODATA; the year is :data:`CODATA_YEAR`).
Internal units: length nm, energy meV, mass in electron masses m₀, temperature K, field T (tesla).
Frequencies are energies ħω in meV; a dynamical matrix is stored as ħ²D in meV², so its
eigenvalues are (ħω)² in meV².
"""

from __future__ import annotations

import re

import numpy as np
from scipy import constants as _c

_MEV = 1e-3 * _c.e  # J per meV
_NM = 1e-9  # m per nm


def _codata_year() -> int:
    """Year of the CODATA set that scipy.constants uses (e.g. 2022)."""
    from scipy.constants import _codata

    name = getattr(_codata, "_current_codata", None)
    if isinstance(name, str) and (m := re.search(r"(\d{4})", name)):
        return int(m.group(1))
    years = [int(k[-4:]) for k in dir(_codata) if re.fullmatch(r"_physical_constants_\d{4}", k)]
    return max(years)


CODATA_YEAR: int = _codata_year()

#: e²/(4πε₀) in meV·nm (1439.964…).
E2_MEV_NM: float = _c.e**2 / (4 * np.pi * _c.epsilon_0) / _MEV / _NM
#: ħ²/m₀ in meV·nm² (76.1996…).
HBAR2_OVER_M0_MEV_NM2: float = _c.hbar**2 / _c.m_e / _MEV / _NM**2
#: ħ in meV·s.
HBAR_MEV_S: float = _c.hbar / _MEV
#: Bohr magneton μ_B in meV/T (5.788382e-2).
MU_B_MEV_PER_T: float = _c.physical_constants["Bohr magneton"][0] / _MEV
#: Boltzmann constant k_B in meV/K (8.617333e-2).
K_B_MEV_PER_K: float = _c.k / _MEV
#: ħω_c per tesla for m = m₀, i.e. ħe/m₀ in meV/T (0.115768…); divide by m/m₀.
HBAR_OMEGA_C_MEV_PER_T: float = _c.hbar * _c.e / _c.m_e / _MEV
#: 1 meV in THz (frequency ν = E/h).
MEV_TO_THZ: float = _MEV / _c.h / 1e12
#: 1 meV in cm⁻¹ (wavenumber E/(hc)).
MEV_TO_INV_CM: float = _MEV / (_c.h * _c.c) / 100.0

#: k_B²/ħ in W/K² (thermal Hall conductance per layer = (k_B²T/ħ) × dimensionless).
KB2_OVER_HBAR_W_PER_K2: float = _c.k**2 / _c.hbar

FREQUENCY_UNITS: dict[str, float] = {"meV": 1.0, "THz": MEV_TO_THZ, "cm-1": MEV_TO_INV_CM}


def convert_frequency(values_meV: np.ndarray, unit: str) -> np.ndarray:
    """Convert ħω from meV to ``unit`` ("meV", "THz" or "cm-1"); signs (imaginary = negative) kept.

    Raises:
        ValueError: unknown unit.
    """
    try:
        factor = FREQUENCY_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown frequency unit {unit!r}; choose one of {sorted(FREQUENCY_UNITS)}") from None
    return np.asarray(values_meV) * factor


def constants_metadata() -> dict[str, float | int]:
    """The constants used, for echoing in output metadata."""
    return {
        "codata_year": CODATA_YEAR,
        "e2_over_4pi_eps0_meV_nm": E2_MEV_NM,
        "hbar2_over_m0_meV_nm2": HBAR2_OVER_M0_MEV_NM2,
        "mu_B_meV_per_T": MU_B_MEV_PER_T,
        "k_B_meV_per_K": K_B_MEV_PER_K,
        "hbar_omega_c_meV_per_T_at_m0": HBAR_OMEGA_C_MEV_PER_T,
    }
