"""Phonon bands in phonopy's ``band.yaml`` layout, so that phonopy's own tools (``phonopy-bandplot``,
readers built on it) read `moire phonons` output (issue 16 §8).

Layout as written by phonopy's ``BandStructure.write_yaml`` (phonopy/phonon/band_structure.py):
a header (``nqpoint``, ``npath``, ``segment_nqpoint``, ``labels`` as one [start, end] pair per
segment, ``reciprocal_lattice``, ``natom``, ``lattice``, ``points``) and ``phonon``: one entry per
q-point with ``q-position`` (reduced coordinates), ``distance`` and ``band`` (one ``frequency`` per
mode, THz). Each segment repeats its two end points, as phonopy's do; a break in the path is a
label pair whose start differs from the previous end (how phonopy-bandplot finds path connections).

phonopy's conventions, not ours, hold inside the file: reciprocal vectors and distances without the
factor 2π (here in 1/nm: ``distance`` = our path distance / 2π); frequencies in THz (imaginary ones
negative); masses in atomic mass units. The moiré crystal is 2D: the file's cell gets a third
vector c = (0, 0, 1 nm), a placeholder that no number in the file depends on except c*; q-points
and positions have a zero third component. Sites are written as phonopy's dummy species "X" with
the carrier mass. Eigenvectors (optional, as in phonopy) have x, y and a zero z per site. Extra header keys (``calculator``, ``length_unit``, ``frequency_unit``) are
ignored by phonopy's readers.
"""

from __future__ import annotations

import json

import numpy as np
from scipy import constants

from moire_cli.band_path import BandPath
from moire_cli.crystals import Crystal
from moire_cli.units import convert_frequency

#: Length (nm) of the placeholder third cell vector normal to the layer.
C_PLACEHOLDER_NM = 1.0
#: Electron mass in atomic mass units (CODATA via scipy).
ELECTRON_MASS_AMU = constants.physical_constants["electron mass in u"][0]

#: Top-level keys phonopy's band.yaml has (and the ones its band plotter reads).
REQUIRED_KEYS = ("nqpoint", "npath", "segment_nqpoint", "labels", "reciprocal_lattice", "natom", "lattice",
                 "points", "phonon")


def phonopy_label(label: str) -> str:
    """Our label as phonopy users write it: "G" → "$\\Gamma$" (matplotlib mathtext); others unchanged."""
    return r"$\Gamma$" if label == "G" else label


def _q(s: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML; labels may contain ' and \\)."""
    return json.dumps(s, ensure_ascii=False)


def band_yaml_text(path: BandPath, crystal: Crystal, frequencies_meV: np.ndarray, mass: float,
                   comment: dict | None = None, eigenvectors: np.ndarray | None = None) -> str:
    """The band.yaml text for bands on ``path``.

    Args:
        path: the band path (q, distance, labels, pieces); its segments become phonopy's paths.
        crystal: the (relaxed) crystal; cell and basis in nm.
        frequencies_meV: (N_q, 2n) ħω in meV along ``path`` (negative = imaginary).
        mass: carrier mass in m₀ (written in amu).
        comment: extra header keys (strings or numbers), written first.
        eigenvectors: optional (N_q, 2n, 2n) complex, column s = mode s, row 2κ + α, in phonopy's
            phase convention (e^{iq·(R + τ_κ′ − τ_κ)}, as ours); written per band as phonopy does,
            [re, im] for x, y and a zero z per site.

    Raises:
        ValueError: frequencies or eigenvectors do not match the path.
    """
    f = np.asarray(frequencies_meV, dtype=float)
    if f.ndim != 2 or f.shape[0] != len(path.q):
        raise ValueError(f"frequencies shape {f.shape} does not match {len(path.q)} path q-points")
    if eigenvectors is not None:
        eigenvectors = np.asarray(eigenvectors)
        if eigenvectors.shape != (f.shape[0], f.shape[1], f.shape[1]):
            raise ValueError(f"eigenvectors shape {eigenvectors.shape} does not match frequencies {f.shape}")
    thz = convert_frequency(f, "THz")
    label_of = dict(path.labels)
    segments = path.segments
    cell = np.zeros((3, 3))
    cell[:2, :2] = crystal.cell
    cell[2, 2] = C_PLACEHOLDER_NM
    rec = np.linalg.inv(cell).T  # rows a*, b*, c* without 2π (phonopy)
    frac = crystal.to_fractional(path.q)
    pos = np.asarray(crystal.basis) @ np.linalg.inv(crystal.cell)  # reduced site coordinates
    dist = np.asarray(path.distance) / (2 * np.pi)
    lines = [f"{k}: {_q(v) if isinstance(v, str) else v}" for k, v in (comment or {}).items()]
    nq = [last - first + 1 for first, last in segments]
    lines += [f"nqpoint: {sum(nq)}", f"npath: {len(segments)}", "segment_nqpoint:"]
    lines += [f"- {n}" for n in nq]
    lines.append("labels:")
    lines += [f"- [ {_q(phonopy_label(label_of[a]))}, {_q(phonopy_label(label_of[b]))} ]" for a, b in segments]
    lines.append("reciprocal_lattice:")
    lines += ["- [ {:14.10f}, {:14.10f}, {:14.10f} ] # {}".format(*v, ax) for v, ax in zip(rec, ("a*", "b*", "c*"), strict=True)]
    lines.append(f"natom: {len(crystal.basis)}")
    lines.append("lattice:")
    lines += ["- [ {:21.15f}, {:21.15f}, {:21.15f} ] # {}".format(*v, ax) for v, ax in zip(cell, "abc", strict=True)]
    lines.append("points:")
    for i, p in enumerate(pos):
        lines.append(f"- symbol: X # {i + 1}")
        lines.append(f"  coordinates: [ {p[0]:18.15f}, {p[1]:18.15f}, {0.0:18.15f} ]")
        lines.append("  mass: %.10g" % (mass * ELECTRON_MASS_AMU))
    lines += ["", "phonon:"]
    for first, last in segments:
        for j in range(first, last + 1):
            lines.append(f"- q-position: [ {frac[j, 0]:12.7f}, {frac[j, 1]:12.7f}, {0.0:12.7f} ]")
            lines.append(f"  distance: {dist[j]:12.7f}")
            lines.append("  band:")
            for k, w in enumerate(thz[j]):
                lines.append(f"  - # {k + 1}")
                lines.append(f"    frequency: {w:15.10f}")
                if eigenvectors is not None:
                    lines.append("    eigenvector:")
                    for atom in range(len(crystal.basis)):
                        lines.append(f"    - # atom {atom + 1}")
                        for c in (*eigenvectors[j, 2 * atom : 2 * atom + 2, k], 0j):
                            lines.append(f"      - [ {c.real:17.14f}, {c.imag:17.14f} ]")
            lines.append("")
    return "\n".join(lines) + "\n"
