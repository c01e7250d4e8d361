"""The report's figures as PNG bytes (matplotlib's Agg canvas; no pyplot, no display), and
the style they share (colours per arm, the PNG's resolution). The Oracle's landscape, the
largest figure, is drawn in oracle.report.landscape.

    accuracy_png(analysis)    test and val accuracy vs sparsity for every arm, mean +- std
    comparisons_png(analysis) each baseline's paired difference from SILO vs sparsity, 95 % band
    curves_png(analysis, curves, cycle)  the Oracle round's learning curves at one cycle
Each returns None when the study has nothing to draw for it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from oracle.judge.analysis import Analysis
from oracle.report import words
from oracle.store.arms import ORACLE, SILO
from oracle.store.plain import missing
from silo.status import RunStatus

DPI = 110
ARM_COLORS = {ORACLE: "#222222", SILO: "#e66101"}
OTHER_COLORS = ["#1f78b4", "#33a02c", "#6a3d9a", "#b15928", "#a6cee3", "#fb9a99", "#b2df8a", "#cab2d6"]


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def arm_colors(arms: list[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * 4)
    return {a: ARM_COLORS.get(a) or next(others) for a in arms}


def viridis() -> Colormap:
    from matplotlib import colormaps

    return colormaps["viridis"].copy()


def accuracy_png(a: Analysis) -> bytes | None:
    stats = a.arms[a.arms["seeds_ok"] > 0]
    if stats.empty:
        return None
    arms = [arm for arm in dict.fromkeys(a.arms["arm"]) if arm in set(stats["arm"])]
    colors = arm_colors(list(dict.fromkeys(a.arms["arm"])))
    fig = Figure(figsize=(11.5, 4.3))
    axes = fig.subplots(1, 2, sharey=False)
    span = max(1.0, 100 * float(stats["sparsity"].max() or 0))
    panels = ((axes[0], "test_acc", "Test accuracy"), (axes[1], "val_acc", "Val accuracy (the Oracle selects on it)"))
    for ax, metric, title in panels:
        for k, arm in enumerate(arms):
            s = stats[stats["arm"] == arm].sort_values("cycle")
            dodge = (k - (len(arms) - 1) / 2) * span * 0.006
            x = 100 * s["sparsity"].fillna(0).to_numpy() + dodge
            y = 100 * s[f"{metric}_mean"].to_numpy()
            err = 100 * s[f"{metric}_std"].fillna(0).to_numpy()
            main = arm in (ORACLE, SILO)
            ax.errorbar(x, y, yerr=err, color=colors[arm], lw=2.2 if main else 1.3, capsize=3,
                        marker="s" if arm == ORACLE else "o", ms=5 if main else 4,
                        alpha=1.0 if main else 0.85, label=arm, zorder=3 if main else 2)
        ax.set_title(title, fontsize=10.5, loc="left")
        ax.set_xlabel("sparsity (% of prunable weights removed)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    axes[0].legend(frameon=False, fontsize=8.5)
    fig.suptitle("Accuracy vs sparsity per arm: mean over seeds, bars = std over seeds "
                 "(oracle: its chosen runs)", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return png(fig)



def comparisons_png(a: Analysis) -> bytes | None:
    """Each baseline's paired difference from SILO (test accuracy) against sparsity, with its
    95 % t interval as a band; the Oracle's difference from SILO (its gap, negated) dashed."""
    table = a.comparisons
    if table is None or table.empty:
        return None
    lines = [(arm, grp, 1.0) for arm, grp in table[table["reference"] == SILO].groupby("arm", sort=False)]
    gap = table[(table["arm"] == SILO) & (table["reference"] == ORACLE)]
    if not gap.empty:
        lines.append((ORACLE, gap, -1.0))  # Oracle - SILO = -(SILO - Oracle); the interval flips
    if not lines:
        return None
    colors = arm_colors(list(dict.fromkeys([*a.arms["arm"], *(n for n, _, _ in lines)])))
    fig = Figure(figsize=(8.5, 4.3))
    ax = fig.subplots()
    for arm, grp, sign in lines:
        grp = grp.sort_values("cycle")
        x = 100 * grp["sparsity"].fillna(0).to_numpy()
        y = 100 * sign * grp["mean_diff"].to_numpy()
        lo, hi = 100 * sign * grp["t_low"].to_numpy(), 100 * sign * grp["t_high"].to_numpy()
        ax.fill_between(x, np.fmin(lo, hi), np.fmax(lo, hi), color=colors[arm], alpha=0.18, lw=0)
        ax.plot(x, y, color=colors[arm], lw=1.8, marker="o", ms=4, ls="--" if arm == ORACLE else "-",
                label=f"{arm} − silo")
    ax.axhline(0, color="#444444", lw=1)
    ax.set_xlabel("sparsity (% of prunable weights removed)")
    ax.set_ylabel("test accuracy difference from SILO (points)")
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(frameon=False, fontsize=8.5)
    ax.set_title("Paired by seed: mean difference, band = 95 % t interval (below 0: SILO better)",
                 fontsize=10, loc="left")
    fig.tight_layout()
    return png(fig)


def oracle_round_curves(a: Analysis, curves: Mapping[str, list[Any]],
                        cycle: int) -> dict[float, list[dict[str, float]]]:
    """{max_lr: [{epoch, val_acc, train_loss}, ...] mean over seeds} of the Oracle's round at
    `cycle` (its ok runs on the Oracle's own lineage, as the analysis keeps them)."""
    runs = a.rows[(a.rows["arm"] == ORACLE) & (a.rows["cycle"] == cycle) & (a.rows["status"] == RunStatus.OK)]
    out: dict[float, list[dict[str, float]]] = {}
    for v, grp in runs.groupby("max_lr", sort=True):
        points = [p for rid in grp["run_id"] for p in (curves.get(rid) or [])]
        if not points:
            continue
        df = pd.DataFrame(points, columns=["epoch", "val_acc", "train_loss"]).astype(float)
        mean = df.groupby("epoch").mean()  # NaN (skipped epochs) left out of each mean
        out[float(v)] = [{"epoch": int(e), "val_acc": r["val_acc"], "train_loss": r["train_loss"]}
                         for e, r in mean.iterrows()]
    return out


def curves_png(a: Analysis, curves: Mapping[str, list[Any]], cycle: int | None) -> bytes | None:
    """The Oracle round's learning curves at `cycle`: val accuracy and training loss per epoch,
    one line per grid value (mean over seeds), the winner drawn thick."""
    fig = curves_figure(a, curves, cycle)
    return None if fig is None else png(fig)


def curves_figure(a: Analysis, curves: Mapping[str, list[Any]], cycle: int | None) -> Figure | None:
    if cycle is None:
        return None
    by_value = oracle_round_curves(a, curves, cycle)
    if not by_value:
        return None
    hit = a.verdicts.loc[a.verdicts["cycle"] == cycle, "oracle_max_lr"]
    winner = float(hit.iloc[0]) if len(hit) and not missing(hit.iloc[0]) else None
    cmap = viridis()
    values = sorted(by_value)
    fig = Figure(figsize=(11.5, 4.0))
    axes = fig.subplots(1, 2)
    for k, v in enumerate(values):
        df = pd.DataFrame(by_value[v])
        color = cmap(k / max(1, len(values) - 1) * 0.9)
        thick = winner is not None and math.isclose(v, winner, rel_tol=1e-12)
        label = f"max_lr {words.lr(v)}" + (" ★ winner" if thick else "")
        seen = df.dropna(subset=["val_acc"])
        axes[0].plot(seen["epoch"], 100 * seen["val_acc"], color=color, lw=2.6 if thick else 1.3, marker="o",
                     ms=3, label=label)
        axes[1].plot(df["epoch"], df["train_loss"], color=color, lw=2.6 if thick else 1.3, marker="o", ms=3)
    axes[0].set_ylabel("val accuracy (%)")
    axes[1].set_ylabel("training loss (epoch mean)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: never a tick at 3.5
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"The Oracle's round at cycle {cycle}: learning curves per grid value, mean over seeds",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig
