"""The materials table: every material parameter of the shipped `moire` configs, once, with its source.

A config names a material (``material: wse2_ws2``) and the table's values become defaults beneath the
config's own keys: built-in defaults < material < YAML < ``--set key=value``, key by key (a config that
gives ``moire_potential.V`` keeps the material's ``a_M``, ``psi_deg``, …). :func:`apply_material` does it.

Each :class:`Value` carries its unit, its source (paper, table or equation) and ``checked``: what was
verified (with the address) and what remains uncertain. Status words in ``checked``:
"verified" (the number was seen in the source or follows from verified inputs by the stated formula),
"consistent" (an independent source brackets it), "not verified" (only the paper's abstract was
reachable; the number is quoted from the cited work and must be checked there before quantitative use).

Units: nm, meV, m₀, degrees. Keys are dotted config keys (docs/moire-inputs.md, "Materials and sources").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from moire_cli.config.common import ConfigError


@dataclass(frozen=True)
class Value:
    """One material parameter: value (float or str), unit, source, and what was checked."""

    value: float | str
    unit: str
    source: str
    checked: str


@dataclass(frozen=True)
class Material:
    """A named material system: a description and {dotted config key: :class:`Value`}."""

    name: str
    description: str
    values: dict[str, Value] = field(default_factory=dict)

    def defaults(self) -> dict[str, float | str]:
        """{dotted config key: value} of this material."""
        return {k: v.value for k, v in self.values.items()}


# ------------------------------------------------------------------ shared numbers with their sources
#: In-plane lattice constants of bulk 2H crystals (nm): Schutte, de Boer & Jellinek, J. Solid State Chem.
#: 70, 207 (1987). Checked: Wikipedia's WSe₂ infobox gives a = 0.3297 nm and 2H-WS₂ a = 3.155 Å is
#: quoted for the mineral (en.wikipedia.org/wiki/Tungsten_diselenide, grokipedia.com/page/Tungsten_disulfide);
#: a_WSe₂ spreads over 0.328–0.330 nm between sources.
LATTICE_CONSTANT_NM = {"WSe2": 0.3282, "WS2": 0.3153}

_HBN = Value(
    5.1, "", "hBN, √(ε∥ ε⊥) = √(6.93 × 3.76) (static, bulk): Laturia, Van de Put & Vandenberghe, "
    "npj 2D Mater. Appl. 2, 6 (2018), Table 1",
    "consistent, uncertain by ~10 %: the search reached that paper's Table 2 (TMDs, "
    "nature.com/articles/s41699-018-0050-x/tables/2) but not its hBN Table 1; a measured out-of-plane "
    "ε⊥ = 3.4 ± 0.2 (Pierret et al., Mater. Res. Express 9, 065901 (2022), mdr.nims.go.jp) gives "
    "√(6.93 × 3.4) = 4.85, and 4.5 is the value many papers use: κ lies in 4.5–5.1, and every "
    "interaction energy scales as 1/κ",
)
_R0_WSE2 = Value(
    4.511, "nm", "WSe₂ 2D polarizability r₀ = 2πχ₂D = 45.11 Å: Berkelbach, Hybertsen & Reichman, "
    "PRB 88, 045318 (2013), Table I",
    "not verified (only the abstract was reachable, tomesphere.com/paper/1305.4972); used only by "
    "interaction kind keldysh",
)
_HOLE_MASS_CHECK = (
    "consistent: μ-ARPES gives K-valley hole masses 0.4 ± 0.1 m₀ for WSe₂ monolayer, bilayer and "
    "MoSe₂/WSe₂ (Wilson et al., Sci. Adv. 3, e1601832 (2017); "
    "warwick.ac.uk/fac/sci/physics/staff/academic/nicholashine/2dm-electronicstructure/; DFT-PBE 0.43 m₀ there)"
)


def aligned_moire_period(a1: float, a2: float) -> float:
    """Moiré period (units of a1, a2) of two aligned lattices: a1·a2/|a1 − a2| (θ = 0).

    Raises:
        ValueError: equal lattice constants (no moiré at θ = 0).
    """
    if a1 == a2:
        raise ValueError("equal lattice constants give no moiré pattern at zero twist")
    return a1 * a2 / abs(a1 - a2)


def twisted_moire_period(a: float, theta_deg: float, mismatch: float = 0.0) -> float:
    """Moiré period a/√(δ² + θ²) (small-angle form; units of a) at twist θ (degrees) and mismatch δ.

    Raises:
        ValueError: δ = θ = 0.
    """
    theta = math.radians(theta_deg)
    if theta == 0 and mismatch == 0:
        raise ValueError("no moiré pattern without twist or mismatch")
    return a / math.hypot(mismatch, theta)


MATERIALS: dict[str, Material] = {
    "wse2_ws2": Material(
        "wse2_ws2",
        "Aligned (near 0°) WSe₂/WS₂ heterobilayer, hBN-encapsulated; holes in the WSe₂ valence band",
        {
            "moire_potential.a_M": Value(
                8.0, "nm", "Regan et al., Nature 579, 359 (2020); Tang et al., Nature 579, 353 (2020)",
                "verified by the formula: a_WSe₂·a_WS₂/(a_WSe₂ − a_WS₂) = 8.02 nm with Schutte et al.'s "
                "0.3282 and 0.3153 nm (the 4 % mismatch); Tang et al.'s abstract (nature.com/articles/"
                "s41586-020-2085-3) confirms the moiré comes from the lattice-constant difference. With "
                "a_WSe₂ = 0.3297 nm (Wikipedia) the same formula gives 7.3 nm: a_M is known to ~10 %",
            ),
            "moire_potential.V": Value(
                15.0, "meV", "continuum model of Zhang, Yuan & Fu, PRB 102, 201115(R) (2020) (arXiv:1910.14061)",
                "not verified: only the abstract was reachable (arcxiv.org/abs/1910.14061; a DFT-fitted "
                "continuum model of WSe₂/WS₂). Order of magnitude only: Δ(r) then spans 10.0 V = 150 meV "
                "peak to peak at ψ = 45°; DFT finds WSe₂ valence-band modulations of ~20 meV (strain), "
                "40–90 meV (piezo) and 40–80 meV (charge transfer) (Wang, Gao & Tong, arXiv:2602.09526)",
            ),
            "moire_potential.psi_deg": Value(
                45.0, "deg", "Zhang, Yuan & Fu, PRB 102, 201115(R) (2020)",
                "not verified (as V); ψ sets which stacking site is the trap and the shape of Δ(r)",
            ),
            "moire_potential.carrier": Value(
                "hole", "", "holes in WSe₂ (type-II alignment; Regan et al. 2020 dope holes)",
                "modelling choice (sign of Δ)",
            ),
            "mass": Value(
                0.45, "m₀", "WSe₂ K-valley hole mass as used in the continuum models (Zhang, Yuan & Fu 2020)",
                _HOLE_MASS_CHECK + "; the exact value used by Zhang, Yuan & Fu not verified",
            ),
            "dielectric.epsilon_top": _HBN,
            "dielectric.epsilon_bottom": _HBN,
            "interaction.r0": _R0_WSE2,
        },
    ),
    "mose2_wse2": Material(
        "mose2_wse2",
        "MoSe₂/WSe₂ heterobilayer at 2° twist, hBN-encapsulated; holes in the WSe₂ valence band",
        {
            "moire_potential.a_M": Value(
                9.40, "nm", "a₀/θ with a_WSe₂ = 0.3282 nm (Schutte et al. 1987) and θ = 2° (chosen here)",
                "verified by the formula: 0.3282 nm / 0.034907 = 9.402 nm; the ~0.1–0.2 % MoSe₂/WSe₂ "
                "mismatch changes it by < 0.1 %; with a_WSe₂ = 0.3297 nm it is 9.45 nm. Scales as 1/θ",
            ),
            "moire_potential.V": Value(
                6.6, "meV", "Wu, Lovorn, Tutuc & MacDonald, PRL 121, 026402 (2018), their WSe₂/MoSe₂ "
                "valence-band continuum parameters",
                "not verified: only the abstract and introduction were reachable "
                "(ar5iv.labs.arxiv.org/html/1804.03151)",
            ),
            "moire_potential.psi_deg": Value(
                -94.0, "deg", "Wu, Lovorn, Tutuc & MacDonald, PRL 121, 026402 (2018)", "not verified (as V)",
            ),
            "moire_potential.carrier": Value("hole", "", "holes in WSe₂ (Wu et al. 2018)", "modelling choice"),
            "mass": Value(
                0.35, "m₀", "Wu, Lovorn, Tutuc & MacDonald, PRL 121, 026402 (2018)",
                _HOLE_MASS_CHECK + "; the value in Wu et al. not seen",
            ),
            "dielectric.epsilon_top": _HBN,
            "dielectric.epsilon_bottom": _HBN,
            "interaction.r0": _R0_WSE2,
        },
    ),
    "mose2_wse2_exciton": Material(
        "mose2_wse2_exciton",
        "Interlayer excitons (electron in MoSe₂, hole in WSe₂) of an hBN-encapsulated MoSe₂/WSe₂ "
        "heterobilayer (`moire melt` only: sets the exciton section)",
        {
            "exciton.m_e": Value(
                0.50, "m₀", "MoSe₂ K-valley conduction-band mass, k·p fits of Kormányos et al., "
                "2D Mater. 2, 022001 (2015)",
                "not verified (only the abstract was reachable, arxiv-vanity.com/papers/1410.6666); "
                "the two spin-split conduction bands of MoSe₂ have different masses",
            ),
            "exciton.m_h": Value(
                0.36, "m₀", "WSe₂ K-valley valence-band mass, Kormányos et al., 2D Mater. 2, 022001 (2015)",
                _HOLE_MASS_CHECK,
            ),
            "interaction.d": Value(
                0.65, "nm", "MoSe₂–WSe₂ interlayer (metal-to-metal) distance as used for the interlayer "
                "exciton dipole, Rivera et al., Nat. Commun. 6, 6242 (2015)",
                "not verified (the search did not reach the paper)",
            ),
            "interaction.r0_1": Value(
                5.171, "nm", "MoSe₂ r₀ = 2πχ₂D = 51.71 Å, Berkelbach, Hybertsen & Reichman, PRB 88, 045318 "
                "(2013), Table I", "not verified (as the WSe₂ value)",
            ),
            "interaction.r0_2": _R0_WSE2,
            "moire_potential.V": Value(
                12.0, "meV", "interlayer-exciton moiré depth ~100–150 meV peak to peak estimated by Yu, Liu, "
                "Tang, Xu & Yao, Sci. Adv. 3, e1701696 (2017); Δ(r) spans 9V at ψ = 0, so V = 12 meV is "
                "~110 meV", "not verified: the abstract (tomesphere.com/paper/1710.07015) confirms moiré "
                "traps for interlayer excitons but not the depth",
            ),
            "moire_potential.psi_deg": Value(0.0, "deg", "modelling choice (C₃-symmetric trap at ψ = 0)", "—"),
            "moire_potential.carrier": Value(
                "electron", "", "modelling choice: excitons sit at the minima of their own potential", "—",
            ),
            "dielectric.epsilon_top": _HBN,
            "dielectric.epsilon_bottom": _HBN,
        },
    ),
}


def material_defaults(name: str) -> dict[str, float | str]:
    """{dotted config key: value} of material ``name``.

    Raises:
        ConfigError: unknown material (one line listing the known ones).
    """
    if not isinstance(name, str) or name not in MATERIALS:
        shown = repr(name) if isinstance(name, str) else f"{name!r} (not a name)"
        raise ConfigError(f"config: material: unknown material {shown}; use one of {', '.join(MATERIALS)}")
    return MATERIALS[name].defaults()


def apply_material(data: dict, fields: set[str] | None = None) -> dict:
    """``data`` with the values of its ``material`` (if any) filled in beneath the keys it gives.

    ``fields``: the top-level sections the config class accepts; a material setting a section outside
    them (the exciton material in a `moire phonons` config) is refused. Returns a new dict.

    Raises:
        ConfigError: unknown material, or a material that does not fit the command (one line).
    """
    name = data.get("material")
    if name is None:
        return data
    values = material_defaults(name)
    if fields is not None:
        foreign = sorted({k.split(".")[0] for k in values} - fields)
        if foreign:
            raise ConfigError(
                f"config: material: {name!r} sets {', '.join(foreign)}, which this command's config does not "
                f"have (use it with `moire melt`)"
            )
    out = dict(data)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        cur = out
        for p in parents:
            nxt = cur.get(p)
            if nxt is None:
                nxt = {}
            elif not isinstance(nxt, dict):
                break  # the config's own non-mapping value is left to validation to name
            else:
                nxt = dict(nxt)
            cur[p] = nxt
            cur = nxt
        else:
            cur.setdefault(leaf, value)
    return out
