"""Figures of the `moire` commands (matplotlib, Agg backend): bands + DOS, bands coloured by l_z,
Berry-curvature maps, Lindemann ratio, melting temperature and phase diagram.

Every function returns a matplotlib Figure; saving is :func:`moire_cli.output.save_figure`.
"""

from __future__ import annotations

import numpy as np


def plot_bands_dos(
    distance: np.ndarray,
    frequencies: np.ndarray,
    labels: list[tuple[int, str]],
    energies: np.ndarray,
    dos: np.ndarray,
    unit: str = "meV",
    title: str = "",
):
    """Bands (N_q, n_modes) along the path (left) and DOS (right), imaginary branches (negative)
    shown below zero in red. Returns the matplotlib Figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axd) = plt.subplots(
        1, 2, figsize=(7.5, 4.2), sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05}
    )
    ax.plot(distance, frequencies, color="C0", lw=1.2)
    neg = np.where(frequencies < 0, frequencies, np.nan)
    if np.isfinite(neg).any():
        ax.plot(distance, neg, color="C3", lw=1.4)
        ax.axhline(0, color="0.5", lw=0.6)
    ticks = [distance[i] for i, _ in labels]
    ax.set_xticks(ticks, [("Γ" if lab == "G" else lab) for _, lab in labels])
    for t in ticks:
        ax.axvline(t, color="0.8", lw=0.6)
    ax.set_xlim(distance[0], distance[-1])
    ax.set_ylabel(f"ħω ({unit}); imaginary < 0")
    ax.set_title(title, fontsize=10)
    axd.plot(dos, energies, color="C0")
    axd.fill_betweenx(energies, 0, dos, color="C0", alpha=0.25)
    axd.set_xlabel("DOS")
    axd.set_xlim(left=0)
    axd.tick_params(labelleft=False)
    return fig


# ------------------------------------------------------------------ moire melt plots
#: Colours of the phase categories of `moire melt` (``melt_run.PHASES``), in order.
_PHASE_COLOURS = ("#4c72b0", "#dd8452", "#c44e52", "#8c8c8c")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lindemann(temperatures, ratios, lindemann_critical, labels, title: str = ""):
    """L(T) per sweep point (P, N_T) with the critical value(s) L_c (P,) dashed. Returns the Figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    n = len(ratios)
    cmap = plt.get_cmap("viridis")
    for i, (r, lab) in enumerate(zip(ratios, labels, strict=True)):
        ax.plot(temperatures, r, color=cmap(i / max(n - 1, 1)), lw=1.3, label=lab if n <= 10 else None)
    for lc in np.unique(np.asarray(lindemann_critical, dtype=float)):
        ax.axhline(lc, color="k", ls="--", lw=0.9)
        ax.text(temperatures[0], lc, f" L_c = {lc:g}", va="bottom", fontsize=8)
    ax.set_xlabel("T (K)")
    ax.set_ylabel("Lindemann ratio L")
    ax.set_xlim(temperatures[0], temperatures[-1])
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    if n <= 10:
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    elif n > 1:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, n - 1))
        fig.colorbar(sm, ax=ax, label="sweep point")
    return fig


def plot_melting_temperature(x, melting_temperature, quantum_melted, groups, xlabel: str, title: str = ""):
    """T_m versus x (P,) with one line per group label (e.g. interaction model); quantum-melted
    points drawn as crosses on the axis, +inf (above the search range) as triangles at the top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = np.asarray(x, dtype=float)
    tm = np.asarray(melting_temperature, dtype=float)
    q = np.asarray(quantum_melted, dtype=bool)
    finite = tm[np.isfinite(tm)]
    top = float(finite.max()) * 1.1 if finite.size else 1.0
    for i, g in enumerate(dict.fromkeys(groups)):
        sel = np.array([gg == g for gg in groups])
        order = np.argsort(x[sel])
        xs, ts, qs = x[sel][order], tm[sel][order], q[sel][order]
        colour = f"C{i % 10}"
        ax.plot(xs, np.where(np.isfinite(ts), ts, np.nan), "o-", color=colour, ms=3.5, lw=1.3, label=g)
        if qs.any():
            ax.plot(xs[qs], np.zeros(qs.sum()), "x", color=colour, ms=7, mew=2)
        up = np.isinf(ts)
        if up.any():
            ax.plot(xs[up], np.full(up.sum(), top), "^", color=colour, ms=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("melting temperature T_m (K)")
    ax.set_ylim(bottom=0)
    ax.set_title(title + ("  (× quantum melted)" if q.any() else ""), fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_phase_diagram(panels, phases, title: str = ""):
    """Phase maps: each panel (panel title, x (nx,), y (ny,), phase index (ny, nx) into ``phases``
    (the phase names, at most four), xlabel, ylabel). Returns the Figure."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 1.2, 3.9), squeeze=False)
    cmap = ListedColormap(_PHASE_COLOURS)
    for ax, (ptitle, x, y, phase, xlabel, ylabel) in zip(axes[0], panels, strict=True):
        x, y = np.asarray(x, float), np.asarray(y, float)
        xe, ye = _axis_edges(ax.set_xticks, x), _axis_edges(ax.set_yticks, y)
        ax.pcolormesh(xe, ye, np.asarray(phase, float), cmap=cmap, vmin=-0.5, vmax=len(_PHASE_COLOURS) - 0.5, shading="flat")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(ptitle, fontsize=9)
    present = sorted({int(v) for p in panels for v in np.ravel(p[3])})
    fig.legend(handles=[Patch(color=_PHASE_COLOURS[i], label=phases[i]) for i in present],
               loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(right=0.8 if n == 1 else 0.86, wspace=0.3)
    return fig


def _axis_edges(set_ticks, c: np.ndarray) -> np.ndarray:
    """Cell edges for sorted centres c (n,): true coordinates when evenly spaced, else one cell per
    value with the values as tick labels (so uneven lists such as V = 1, 3, 15 stay readable)."""
    if c.size > 2 and not np.allclose(np.diff(c), c[1] - c[0], rtol=1e-6):
        step = max(1, int(np.ceil(c.size / 8)))
        idx = np.arange(0, c.size, step)
        set_ticks(idx.astype(float), [f"{v:g}" for v in c[idx]])
        return np.arange(c.size + 1) - 0.5
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


# ------------------------------------------------------------------ chiral phonon plots
def plot_bands_angular_momentum(
    distance: np.ndarray,
    frequencies: np.ndarray,
    l_z: np.ndarray,
    labels: list[tuple[int, str]],
    unit: str = "meV",
    title: str = "",
):
    """Bands (N_q, n_modes) along the path coloured by the phonon angular momentum l_z (ħ),
    a diverging map symmetric about 0 (red: counterclockwise). Returns the Figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lim = max(float(np.nanmax(np.abs(l_z), initial=0.0)), 1e-3)
    norm = Normalize(-lim, lim)
    for s in range(frequencies.shape[1]):
        pts = np.stack([distance, frequencies[:, s]], axis=-1)
        seg = np.stack([pts[:-1], pts[1:]], axis=1)
        lc = LineCollection(seg, cmap="coolwarm", norm=norm, linewidths=2.0)
        lc.set_array(0.5 * (l_z[:-1, s] + l_z[1:, s]))
        ax.add_collection(lc)
    ticks = [distance[i] for i, _ in labels]
    ax.set_xticks(ticks, [("Γ" if lab == "G" else lab) for _, lab in labels])
    for t in ticks:
        ax.axvline(t, color="0.8", lw=0.6)
    ax.set_xlim(distance[0], distance[-1])
    lo, hi = float(np.min(frequencies)), float(np.max(frequencies))
    pad = 0.05 * max(hi - lo, 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(f"ħω ({unit})")
    ax.set_title(title, fontsize=10)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="coolwarm"), ax=ax, label="l_z (ħ)")
    return fig


def brillouin_zone(reciprocal: np.ndarray) -> np.ndarray:
    """Vertices (n_v, 2) of the first Brillouin zone (Wigner–Seitz cell of the reciprocal lattice),
    counterclockwise, from ``scipy.spatial.Voronoi`` of the nearby reciprocal lattice points."""
    from scipy.spatial import Voronoi

    r = np.arange(-2, 3)
    g = (r[:, None, None] * reciprocal[0] + r[None, :, None] * reciprocal[1]).reshape(-1, 2)
    vor = Voronoi(g)
    centre = int(np.argmin(np.linalg.norm(g, axis=1)))
    verts = vor.vertices[vor.regions[vor.point_region[centre]]]
    return verts[np.argsort(np.arctan2(verts[:, 1], verts[:, 0]))]


def plot_berry_curvature_map(
    q_centres: np.ndarray,
    berry_curvature: np.ndarray,
    reciprocal: np.ndarray,
    title: str = "",
):
    """Map of Ω (nm²) of one band over the first Brillouin zone.

    q_centres (N1, N2, 2) plaquette centres of an N1 × N2 mesh (1/nm), berry_curvature (N1, N2) nm²
    (NaN = undefined, left blank). The mesh cells are tiled by reciprocal vectors and clipped to the
    Wigner–Seitz zone. Returns the Figure (Agg).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.patches import Polygon

    n1, n2 = berry_curvature.shape
    b = np.asarray(reciprocal, dtype=float)
    # Cell corners of each plaquette (N1 + 1, N2 + 1, 2), centred on the stored centres.
    i1, i2 = np.meshgrid(np.arange(n1 + 1) - 0.5, np.arange(n2 + 1) - 0.5, indexing="ij")
    origin = q_centres[0, 0]
    # Plaquette (i, j) has centre origin + i b1/N1 + j b2/N2 modulo G; rebuild a regular grid.
    frac = (q_centres.reshape(-1, 2) - origin) @ np.linalg.inv(b) * np.array([n1, n2])
    order = np.lexsort((np.rint(frac[:, 1]) % n2, np.rint(frac[:, 0]) % n1))
    values = berry_curvature.reshape(-1)[order].reshape(n1, n2)
    corners = origin + (i1[..., None] / n1) * b[0] + (i2[..., None] / n2) * b[1]
    zone = brillouin_zone(b)
    finite = np.abs(values[np.isfinite(values)])
    lim = float(np.percentile(finite, 98)) if finite.size else 0.0
    norm = Normalize(-(lim or 1.0), lim or 1.0)  # 98th percentile: spikes near degeneracies saturate
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    patch = Polygon(zone, closed=True, fill=False, edgecolor="k", lw=1.0)
    ax.add_patch(patch)
    mesh_artist = None
    for s1 in (-1, 0, 1):
        for s2 in (-1, 0, 1):
            shift = s1 * b[0] + s2 * b[1]
            c = corners + shift
            mesh_artist = ax.pcolormesh(
                c[..., 0], c[..., 1], np.ma.masked_invalid(values), cmap="RdBu_r", norm=norm, shading="flat"
            )
            mesh_artist.set_clip_path(patch)
    ext = 1.05 * np.max(np.abs(zone), axis=0)
    ax.set_xlim(-ext[0], ext[0])
    ax.set_ylim(-ext[1], ext[1])
    ax.set_aspect("equal")
    ax.set_xlabel("q_x (1/nm)")
    ax.set_ylabel("q_y (1/nm)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(mesh_artist, ax=ax, label="Berry curvature Ω (nm²)")
    return fig
