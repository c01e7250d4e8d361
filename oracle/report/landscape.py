"""The report's main figure: the Oracle's landscape as a heat map of mean val accuracy over
cycle x max_lr, its judged interval per cycle, SILO's max_lr marked by its verdict (and, given
one, the calibrated SILO's max_lr as a dashed line). Style shared with the other figures
comes from oracle.report.plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from oracle.judge.analysis import Analysis
from oracle.report import words
from oracle.report.plots import ARM_COLORS, png, viridis
from oracle.store.arms import SILO
from oracle.store.plain import missing
from silo.status import RunStatus

INSIDE_COLOR, OUTSIDE_COLOR, UNCERTAIN_COLOR = "#1a9850", "#d73027", "#f1a340"
# SILO's mark per cycle, by verdict: three shapes as well as three colours, so the figure
# still reads in greyscale. None: no verdict (the Oracle has no interval there).
# matplotlib's style keywords, of several types each (Any: matplotlib's own **kwargs)
VERDICT_MARKS: dict[str | None, dict[str, Any]] = {
    "inside": dict(marker="o", ms=9, mfc=INSIDE_COLOR, mec="white", mew=1.5),
    "outside": dict(marker="X", ms=11, mfc=OUTSIDE_COLOR, mec="white", mew=1.2),
    "uncertain": dict(marker="D", ms=8, mfc=UNCERTAIN_COLOR, mec="black", mew=1.0),
    None: dict(marker="o", ms=8, mfc="white", mec=ARM_COLORS[SILO], mew=2),
}
CALIBRATED_COLOR = "#5e3c99"  # purple, dashed, hollow squares: apart from SILO's solid orange


def _edges(values: list[float]) -> np.ndarray:
    """Cell edges around log-spaced centres: geometric midpoints, half a step beyond the ends."""
    v = np.log(np.asarray(values, dtype=float))
    if len(v) == 1:
        return np.asarray(np.exp(np.array([v[0] - 0.4, v[0] + 0.4])))
    mid = (v[1:] + v[:-1]) / 2
    return np.asarray(np.exp(np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])))


def landscape_png(a: Analysis, calibrated: dict[int, float] | None = None) -> bytes | None:
    """`calibrated`: the calibrated SILO's max_lr per cycle (oracle.judge.calibrate), drawn beside SILO's."""
    fig = landscape_figure(a, calibrated)
    return None if fig is None else png(fig)


def landscape_figure(a: Analysis, calibrated: dict[int, float] | None = None) -> Figure | None:
    cells = _landscape_cells(a)
    if cells is None:
        return None
    fig = Figure(figsize=_landscape_size(cells), layout="constrained")
    ax = fig.add_subplot()
    scale = _heat_scale(cells.z)
    _draw_heat_map(fig, ax, cells, scale)
    _draw_judged_intervals(ax, a.verdicts, cells)
    if len(cells.cycles) * len(cells.values) <= 200:  # label every cell while there is room
        _label_cells(ax, cells, scale, _winner_cells(a.verdicts, cells), _silo_at(a.verdicts, cells.col))
    handles: list[Artist] = [Patch(facecolor="none", edgecolor="black", ls="--", label="Oracle's judged interval"),
               Line2D([], [], marker="$★$", ls="none", ms=10, color="black", label="Oracle's winner")]
    silo_handles, silo_drawn = _draw_silo(ax, a.verdicts, cells.col)
    calibrated_handles, calibrated_drawn = _draw_calibrated(ax, calibrated, cells.col)
    _set_landscape_axes(ax, cells, a.verdicts["sparsity"], drawn=silo_drawn + calibrated_drawn)
    _draw_legend(fig, [*handles, *silo_handles, *calibrated_handles])
    return fig


@dataclass(frozen=True)
class _LandscapeCells:
    """The Oracle's landscape as heat-map cells: column j a cycle, row i a grid value."""

    cycles: list[int]
    values: list[float]  # the grid's max_lr values, ascending, all > 0
    col: dict[int, int]  # cycle -> j
    row: dict[float, int]  # max_lr -> i
    z: np.ndarray  # mean val accuracy (%) per (i, j); NaN where the cell is not ok
    states: dict[tuple[int, int], str]  # the landscape's state of each cell it has
    y_edges: np.ndarray  # the rows' edges (log-spaced, see _edges)


def _landscape_cells(a: Analysis) -> _LandscapeCells | None:
    """None when there is nothing to draw: no landscape, or no grid value > 0."""
    land = a.landscape
    if land.empty:
        return None
    cycles = a.verdicts["cycle"].tolist()
    # The study's grid as well as the values run: a value with no run yet keeps its (grey) row.
    values = sorted(set(land["max_lr"].tolist()) | set(a.settings.grid or ()))
    values = [v for v in values if v > 0]
    if not values:
        return None
    col = {q: j for j, q in enumerate(cycles)}
    row = {v: i for i, v in enumerate(values)}
    z = np.full((len(values), len(cycles)), np.nan)
    states: dict[tuple[int, int], str] = {}
    for r in land.to_dict("records"):
        if r["max_lr"] not in row:
            continue
        i, j = row[r["max_lr"]], col[r["cycle"]]
        states[(i, j)] = r["state"]
        if r["state"] == RunStatus.OK:
            z[i, j] = 100 * r["mean_val_acc"]
    return _LandscapeCells(cycles, values, col, row, z, states, _edges(values))


def _landscape_size(cells: _LandscapeCells) -> tuple[float, float]:
    # Wider with more cycles and taller with more grid values, within bounds.
    width = min(13.0, max(8.5, 3.2 + 0.95 * len(cells.cycles)))
    height = min(8.0, 2.6 + 0.42 * len(cells.values))
    return width, height


@dataclass(frozen=True)
class _HeatScale:
    """The heat map's colours: viridis from vmin to vmax, grey for cells without a value."""

    cmap: Colormap
    vmin: float
    vmax: float

    def dark(self, value: float) -> bool:
        """Whether the colour of `value` is dark enough to need white text on it."""
        rgb = self.cmap((value - self.vmin) / (self.vmax - self.vmin))[:3]
        return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.55


def _heat_scale(z: np.ndarray) -> _HeatScale:
    finite = z[np.isfinite(z)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:  # one accuracy everywhere: give the colours a range around it
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return _HeatScale(viridis().with_extremes(bad="#e6e6e6"), vmin, vmax)


def _draw_heat_map(fig: Figure, ax: Axes, cells: _LandscapeCells, scale: _HeatScale) -> None:
    x_edges = np.arange(len(cells.cycles) + 1) - 0.5
    mesh = ax.pcolormesh(x_edges, cells.y_edges, np.ma.masked_invalid(cells.z), cmap=scale.cmap,
                         vmin=scale.vmin, vmax=scale.vmax, edgecolors="white", linewidth=0.6)
    ax.set_yscale("log")
    cbar = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.05)
    cbar.set_label("mean val accuracy over seeds (%)")


def _draw_judged_intervals(ax: Axes, verdicts: pd.DataFrame, cells: _LandscapeCells) -> None:
    """The judged interval: a box from judged_low to judged_high (halfway, in log, to the next
    grid value outside V); an open end is drawn to the grid's edge with an arrow beyond it."""
    for r in verdicts.to_dict("records"):
        if missing(r["judged_low"]):  # no interval at this cycle
            continue
        j = cells.col[r["cycle"]]
        lo_edge = cells.y_edges[0] if r["open_low"] else r["judged_low"]
        hi_edge = cells.y_edges[-1] if r["open_high"] else r["judged_high"]
        box_x = [j - 0.47, j + 0.47, j + 0.47, j - 0.47, j - 0.47]
        box_y = [lo_edge, lo_edge, hi_edge, hi_edge, lo_edge]
        # A dashed black line on a wider white one: the box stands out on any colour.
        ax.plot(box_x, box_y, color="white", lw=3.2, zorder=4, solid_joinstyle="miter")
        ax.plot(box_x, box_y, color="black", lw=1.3, ls=(0, (4, 2)), zorder=5)
        for is_open, edge, arrow in ((r["open_low"], lo_edge, "↓"), (r["open_high"], hi_edge, "↑")):
            if is_open:
                ax.text(j + 0.36, edge, arrow, ha="center", va="top" if arrow == "↓" else "bottom",
                        fontsize=11, fontweight="bold", color="black", zorder=6, clip_on=False)


def _winner_cells(verdicts: pd.DataFrame, cells: _LandscapeCells) -> set[tuple[int | None, int]]:
    """The (i, j) cell of the Oracle's winner at each cycle with a judged interval."""
    return {(cells.row.get(r["oracle_max_lr"]), cells.col[r["cycle"]])
            for r in verdicts.to_dict("records") if not missing(r["judged_low"])}


def _silo_at(verdicts: pd.DataFrame, col: dict[int, int]) -> dict[int, float]:
    """SILO's max_lr per column of the heat map, where it has one."""
    return {col[r["cycle"]]: float(r["silo_max_lr"]) for r in verdicts.to_dict("records")
            if r["cycle"] in col and not missing(r["silo_max_lr"]) and r["silo_max_lr"] > 0}


def _label_cells(ax: Axes, cells: _LandscapeCells, scale: _HeatScale, winners: set[tuple[int | None, int]],
                 silo: dict[int, float]) -> None:
    """Each cell's mean val accuracy, starred at the Oracle's winner; a cell not ok, its state.
    Placed in the cell's upper part; in the cell SILO's marker lies in, in the half away from
    it and to the side, so the marker never covers the number."""
    for (i, j), state in cells.states.items():
        value, low, high = cells.values[i], cells.y_edges[i], cells.y_edges[i + 1]
        y = math.exp(math.log(value) + 0.42 * (math.log(high) - math.log(value)))
        x: float = j
        if j in silo and low <= silo[j] < high:
            if silo[j] >= value:  # the marker in the upper half: the number in the lower one
                y = math.exp(math.log(value) - 0.42 * (math.log(value) - math.log(low)))
            x = j + 0.28
        if state != RunStatus.OK:
            ax.text(x, y, state.replace(" (", "\n("), ha="center", va="center", fontsize=8, color="#555555",
                    style="italic", zorder=6)  # "not trained (beam)" on two lines, to fit a cell
            continue
        win = (i, j) in winners
        ax.text(x, y, ("★ " if win else "") + f"{cells.z[i, j]:.1f}", ha="center", va="center",
                fontsize=9 if win else 8, fontweight="bold" if win else "normal",
                color="white" if scale.dark(cells.z[i, j]) else "black", zorder=6)


def _draw_silo(ax: Axes, verdicts: pd.DataFrame, col: dict[int, int]) -> tuple[list[Line2D], list[float]]:
    """SILO's max_lr per cycle, each point marked by its verdict: (legend handles, max_lr drawn)."""
    silo = verdicts[verdicts["silo_max_lr"].notna() & (verdicts["silo_max_lr"] > 0)]
    if silo.empty:
        return [], []
    xs = [col[q] for q in silo["cycle"]]
    ys = silo["silo_max_lr"].tolist()
    ax.plot(xs, ys, color=ARM_COLORS[SILO], lw=2, zorder=7)
    for x, y, verdict in zip(xs, ys, silo["verdict"].tolist()):
        style = VERDICT_MARKS.get(verdict if isinstance(verdict, str) else None, VERDICT_MARKS[None])
        ax.plot([x], [y], ls="none", zorder=8, **style)
    handles = [
        Line2D([], [], color=ARM_COLORS[SILO], lw=2, label=f"SILO's max_lr: {verdict}",
               **{k: v for k, v in VERDICT_MARKS[verdict].items() if k != "ms"}, ms=8)
        for verdict in ("inside", "outside", "uncertain")
    ]
    return handles, ys


def _draw_calibrated(
    ax: Axes, calibrated: dict[int, float] | None, col: dict[int, int]
) -> tuple[list[Line2D], list[float]]:
    """The calibrated SILO's max_lr at the cycles drawn: (legend handles, max_lr drawn)."""
    cal = [(col[q], v) for q, v in sorted((calibrated or {}).items()) if q in col and v > 0]
    if not cal:
        return [], []
    style: dict[str, Any] = dict(color=CALIBRATED_COLOR, lw=2, ls=(0, (5, 3)), marker="s", ms=7, mfc="white",
                                 mec=CALIBRATED_COLOR, mew=1.8)
    ys = [y for _, y in cal]
    ax.plot([x for x, _ in cal], ys, **style, zorder=7.5)
    return [Line2D([], [], **style, label="calibrated SILO's max_lr")], ys


def _set_landscape_axes(ax: Axes, cells: _LandscapeCells, sparsity: pd.Series, *, drawn: list[float]) -> None:
    """Ticks at the grid values and cycles; the y range also holds every max_lr `drawn` off the grid."""
    y_edges = cells.y_edges
    if drawn:
        ax.set_ylim(min(y_edges[0], min(drawn) / 1.4), max(y_edges[-1], max(drawn) * 1.4))
    else:
        ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_yticks(cells.values)
    ax.set_yticklabels([words.lr(v) for v in cells.values])  # as every table and legend writes max_lr
    ax.minorticks_off()
    ax.set_xlim(-0.5, len(cells.cycles) - 0.5)
    ax.set_xticks(range(len(cells.cycles)))
    ax.set_xticklabels([_cycle_label(q, s) for q, s in zip(cells.cycles, sparsity)])
    ax.set_xlabel("cycle (sparsity)")
    ax.set_ylabel("max_lr (log scale)")
    ax.set_title("The Oracle's landscape: mean val accuracy per grid value, on the Oracle's own trajectory",
                 fontsize=10.5, loc="left")


def _draw_legend(fig: Figure, handles: Sequence[Artist]) -> None:
    # One row while it holds five entries, else two.
    ncol = len(handles) if len(handles) <= 5 else math.ceil(len(handles) / 2)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False, fontsize=8.5)


def _cycle_label(q: int, sparsity: float) -> str:
    return f"{q}" if missing(sparsity) else f"{q}\n({100 * sparsity:.0f}%)"
