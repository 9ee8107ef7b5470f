"""Figures of the `moire` commands (matplotlib, Agg backend): bands + DOS, bands coloured by l_z,
Berry-curvature maps, Lindemann ratio, melting temperature and phase diagram.

Every function returns a matplotlib Figure; saving is :func:`moire_cli.output.save_figure`.
"""

from __future__ import annotations

import numpy as np


def _pieces(pieces, n: int) -> list[tuple[int, int]]:
    return [(0, n)] if pieces is None else [(int(a), int(b)) for a, b in pieces]


def _path_axis(ax, distance: np.ndarray, ticks: list[tuple[float, str]], pieces: list[tuple[int, int]]) -> None:
    """Ticks at the labelled points (a break's two labels joined, e.g. "Γ|K'"), thin grey lines at
    the points, a black line at each break, x limits at the path ends."""
    ax.set_xticks([x for x, _ in ticks], [t for _, t in ticks])
    breaks = {float(distance[a]) for a, _ in pieces[1:]}
    for x, _ in ticks:
        if x in breaks:
            ax.axvline(x, color="k", lw=1.0)
        else:
            ax.axvline(x, color="0.8", lw=0.6)
    ax.set_xlim(distance[0], distance[-1])


def plot_bands_dos(
    distance: np.ndarray,
    frequencies: np.ndarray,
    ticks: list[tuple[float, str]],
    energies: np.ndarray,
    dos: np.ndarray,
    unit: str = "meV",
    title: str = "",
    pieces: list[tuple[int, int]] | None = None,
):
    """Bands (N_q, n_modes) along the path (left) and DOS (states per ``unit`` per cell, right),
    imaginary branches (negative) shown below zero in red.

    Args:
        distance: (N_q,) path coordinate; ticks: (x, text) of the labelled points
            (``BandPath.tick_labels``); pieces: (start, stop) index ranges of the continuous pieces
            (no line is drawn across a break); None = one piece.

    Returns:
        the matplotlib Figure (Agg).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax, axd) = plt.subplots(
        1, 2, figsize=(7.8, 4.2), sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.08}
    )
    pieces = _pieces(pieces, len(distance))
    neg = np.where(frequencies < 0, frequencies, np.nan)
    for a, b in pieces:
        ax.plot(distance[a:b], frequencies[a:b], color="C0", lw=1.2)
        if np.isfinite(neg).any():
            ax.plot(distance[a:b], neg[a:b], color="C3", lw=1.4)
    if np.isfinite(neg).any():
        ax.axhline(0, color="0.5", lw=0.6)
    _path_axis(ax, distance, ticks, pieces)
    ax.set_ylabel(f"ħω ({unit}); imaginary < 0")
    ax.set_title(title, fontsize=10)
    axd.plot(dos, energies, color="C0")
    axd.fill_betweenx(energies, 0, dos, color="C0", alpha=0.25)
    axd.set_xlabel(f"DOS (1/{unit} per cell)")
    axd.set_xlim(left=0)
    # No "0" at the left end of the DOS axis: it would run into the last tick of the band path.
    axd.xaxis.set_major_locator(MaxNLocator(nbins=3, prune="lower"))
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


def plot_lindemann(
    temperatures,
    ratios,
    lindemann_critical,
    panel_of,
    panel_titles,
    colour_of,
    colour_labels,
    title: str = "",
):
    """L(T) of P sweep points (P, N_T), faceted: one panel per combination of the swept parameters
    other than the colour one, curves coloured by the colour parameter (one legend for all panels),
    the critical value(s) L_c (P,) dashed in each panel.

    Args:
        panel_of: (P,) panel index of each point; panel_titles: one title per panel.
        colour_of: (P,) index into colour_labels (legend text, e.g. "a_M = 4 nm").

    Returns:
        the Figure.
    """
    plt = _pyplot()
    ratios = np.asarray(ratios, dtype=float)
    lcs = np.broadcast_to(np.asarray(lindemann_critical, dtype=float), (len(ratios),))
    panel_of = np.asarray(panel_of, dtype=int)
    colour_of = np.asarray(colour_of, dtype=int)
    n_panels = len(panel_titles)
    ncols = min(n_panels, 3)
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols + 1.6, 2.7 * nrows + 0.6), sharex=True,
                             sharey=True, squeeze=False)
    n_c = len(colour_labels)
    cmap = plt.get_cmap("viridis")
    colours = [cmap(0.9 * k / max(n_c - 1, 1)) for k in range(n_c)]
    handles = {}
    for k, ax in enumerate(axes.flat):
        if k >= n_panels:
            ax.set_visible(False)
            continue
        sel = np.flatnonzero(panel_of == k)
        for i in sel:
            (line,) = ax.plot(temperatures, ratios[i], color=colours[colour_of[i]], lw=1.3)
            handles.setdefault(int(colour_of[i]), line)
        for lc in np.unique(lcs[sel]):
            ax.axhline(lc, color="k", ls="--", lw=0.9)
            ax.text(temperatures[-1], lc, f"L_c = {lc:g} ", va="bottom", ha="right", fontsize=7)
        if not np.isfinite(ratios[sel]).any():
            ax.text(0.5, 0.5, "unstable: no L", transform=ax.transAxes, ha="center", fontsize=8, color="0.4")
        ax.set_title(panel_titles[k], fontsize=8.5)
        ax.set_xlim(temperatures[0], temperatures[-1])
        ax.set_ylim(bottom=0)
        if k % ncols == 0:
            ax.set_ylabel("Lindemann ratio L")
        if k >= n_panels - ncols:
            ax.set_xlabel("T (K)")
            ax.xaxis.set_tick_params(labelbottom=True)
    order = sorted(handles)
    fig.legend([handles[k] for k in order], [colour_labels[k] for k in order], loc="center left",
               bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


#: Line styles and markers that tell overlapping series apart (filled, then open markers).
_STYLES = (("-", "o", True), ("--", "s", False), (":", "^", True), ("-.", "D", False))


def plot_melting_temperature(x, melting_temperature, quantum_melted, series_of, series_labels, colour_of,
                             style_of, xlabel: str, title: str = ""):
    """T_m versus x (P,), one line per series; colour and style (line style + marker, filled or
    open) each encode one swept parameter, so series that coincide stay visible (a dashed line
    with open markers around a solid one's filled markers). Quantum-melted points are crosses on
    the axis, +inf (above the search range) triangles at the top.

    Args:
        series_of: (P,) series index of each point; series_labels: legend text per series (with units).
        colour_of, style_of: (n_series,) colour and style index of each series.

    Returns:
        the Figure.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    x = np.asarray(x, dtype=float)
    tm = np.asarray(melting_temperature, dtype=float)
    q = np.asarray(quantum_melted, dtype=bool)
    series_of = np.asarray(series_of, dtype=int)
    finite = tm[np.isfinite(tm)]
    top = float(finite.max()) * 1.1 if finite.size else 1.0
    for k, label in enumerate(series_labels):
        sel = np.flatnonzero(series_of == k)
        order = sel[np.argsort(x[sel])]
        xs, ts, qs = x[order], tm[order], q[order]
        colour = f"C{colour_of[k] % 10}"
        ls, marker, filled = _STYLES[style_of[k] % len(_STYLES)]
        face = colour if filled else "none"  # open markers show a coinciding filled one inside
        ax.plot(xs, np.where(np.isfinite(ts), ts, np.nan), ls=ls, marker=marker, color=colour, mfc=face,
                ms=5 if filled else 6.5, lw=1.4, label=label, zorder=2 + k)
        if qs.any():
            ax.plot(xs[qs], np.zeros(qs.sum()), "x", color=colour, ms=7, mew=2, clip_on=False, zorder=10)
        up = np.isinf(ts)
        if up.any():
            ax.plot(xs[up], np.full(up.sum(), top), "^", color=colour, ms=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("melting temperature T_m (K)")
    ax.set_ylim(bottom=0)
    ax.set_title(title + ("  (× quantum melted)" if q.any() else ""), fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
    ticks: list[tuple[float, str]],
    unit: str = "meV",
    title: str = "",
    pieces: list[tuple[int, int]] | None = None,
):
    """Bands (N_q, n_modes) along the path coloured by the phonon angular momentum l_z (ħ),
    a diverging map symmetric about 0 (red: counterclockwise); ticks and pieces as in
    :func:`plot_bands_dos`. Returns the Figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lim = max(float(np.nanmax(np.abs(l_z), initial=0.0)), 1e-3)
    norm = Normalize(-lim, lim)
    pieces = _pieces(pieces, len(distance))
    for a, b in pieces:  # no segment across a break
        for s in range(frequencies.shape[1]):
            pts = np.stack([distance[a:b], frequencies[a:b, s]], axis=-1)
            seg = np.stack([pts[:-1], pts[1:]], axis=1)
            lc = LineCollection(seg, cmap="coolwarm", norm=norm, linewidths=2.0)
            lc.set_array(0.5 * (l_z[a : b - 1, s] + l_z[a + 1 : b, s]))
            ax.add_collection(lc)
    _path_axis(ax, distance, ticks, pieces)
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
