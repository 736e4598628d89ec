"""Variance-of-Gradients figures: test error per VoG decile, the lowest / highest VoG
images of a class, and the toy study's decision boundary and VoG-distance scatter."""

import numpy as np

from raydiff.plots.common import pyplot
from raydiff.plots.images import thumb
from raydiff.scores.vog import STAGES


def decile_figure(deciles, *, title, spread=None):
    """One panel per stage: test error (%) against the VoG percentile (5, 15, ..., 95).
    ``deciles`` has columns stage, percentile, error (and ``error_std`` drawn as error bars
    when ``spread``), and optionally ``setting`` (one line per setting)."""
    plt = pyplot()
    stages = [s for s in STAGES if s in set(deciles["stage"])]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.4 * len(stages), 3.0), sharey=True,
                             squeeze=False)
    groups = deciles.groupby("setting", sort=True) if "setting" in deciles else [("", deciles)]
    for setting, part in groups:
        for ax, stage in zip(axes[0], stages):
            rows = part[part["stage"] == stage].sort_values("percentile")
            ax.errorbar(rows["percentile"], rows["error"], marker="o", ms=3,
                        yerr=rows["error_std"] if spread else None, label=setting or None,
                        capsize=2)
    for ax, stage in zip(axes[0], stages):
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("VoG percentile")
        ax.set_xticks(range(5, 100, 10))
    axes[0][0].set_ylabel("test error (%)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9, y=1.04)
    return fig


def grid_figure(images, score, predicted, *, n, title):
    """n x n lowest-VoG images (left) and n x n highest (right), lowest / highest first,
    each with the model's prediction above it. ``images`` (m, C, H, W) uint8."""
    plt = pyplot()
    order = np.argsort(score, kind="stable")
    sides = {"lowest VoG": order[:n * n], "highest VoG": order[::-1][:n * n]}
    fig, axes = plt.subplots(n, 2 * n + 1, figsize=(1.1 * (2 * n + 1), 1.25 * n + 0.5),
                             squeeze=False)
    cmap = "gray" if images.shape[1] == 1 else None
    for ax in axes.ravel():
        ax.set_axis_off()
    for side, (name, idx) in enumerate(sides.items()):
        for k, i in enumerate(idx):
            ax = axes[k // n][k % n + side * (n + 1)]
            ax.imshow(thumb(images[i]), cmap=cmap)
            ax.set_title(f"pred {predicted[i]}", fontsize=6)
        axes[0][side * (n + 1) + n // 2].text(0.5, 1.45, name, transform=axes[0][
            side * (n + 1) + n // 2].transAxes, ha="center", fontsize=8)
    fig.suptitle(title, fontsize=9, y=1.02)
    return fig


def boundary_figure(points, w, c, *, title, ax=None):
    """Decision regions of the line ``x @ w + c = 0`` with the points (columns x0, x1,
    label) drawn over them."""
    plt = pyplot()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    lo = points[["x0", "x1"]].min().to_numpy() - 1
    hi = points[["x0", "x1"]].max().to_numpy() + 1
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    side = (np.c_[gx.ravel(), gy.ravel()] @ w + c > 0).reshape(gx.shape)
    ax.contourf(gx, gy, side.astype(float), levels=[-0.5, 0.5, 1.5], colors=["C0", "C3"],
                alpha=0.15)
    ax.contour(gx, gy, side.astype(float), levels=[0.5], colors="k", linewidths=1)
    for label, color in ((0, "C0"), (1, "C3")):
        sel = points["label"] == label
        ax.scatter(points.loc[sel, "x0"], points.loc[sel, "x1"], s=14, c=color,
                   edgecolors="k", linewidths=0.4, label=f"class {label}")
    ax.set_xlabel("feature 1"), ax.set_ylabel("feature 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def distance_figure(points, vog_column, *, title, ax=None):
    """VoG (``vog_column``) against the perpendicular distance to the boundary, by class."""
    plt = pyplot()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    for label, color in ((0, "C0"), (1, "C3")):
        sel = points["label"] == label
        ax.scatter(points.loc[sel, vog_column], points.loc[sel, "distance"], s=14, c=color,
                   edgecolors="k", linewidths=0.4, alpha=0.7, label=f"class {label}")
    ax.set_xlabel(f"VoG ({vog_column})"), ax.set_ylabel("distance to the boundary")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig

