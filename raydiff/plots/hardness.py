"""Hardness-benchmark figures: the critical-difference diagram of one kind of hardness and
the heatmap of detection quality, method x kind."""

import numpy as np

from raydiff.plots.common import pyplot


def cd_diagram(ranks, cliques, *, cd=None, title=""):
    """A critical-difference diagram (Demšar 2006): methods on an axis of average rank.

    Parameters
    ----------
    ranks : dict {method: average rank}, rank 1 = best; drawn on an axis from 1 (left) to
        the number of methods (right), the better half labelled on the left, the rest on
        the right.
    cliques : list of lists of methods whose ranks do not differ significantly (the
        post-hoc test's groups), each drawn as a thick bar joining its methods.
    cd : float or None, the critical difference (Nemenyi): drawn as a bar of that length
        above the axis when given.
    title : str

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    order = sorted(ranks, key=lambda m: (ranks[m], m))
    k = len(order)
    left = (k + 1) // 2
    rows = max(left, k - left)
    base = -0.45 - 0.3 * len(cliques)              # the first label row, below the cliques
    bottom = base - 0.55 * (rows - 1) - 0.4
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * (1.8 - bottom)))
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.6, hi + 0.6)
    ax.set_ylim(bottom, 1.6)
    ax.axis("off")
    # the rank axis, 1 on the left (best)
    ax.plot([lo, hi], [0, 0], color="black", lw=1)
    for r in range(lo, hi + 1):
        ax.plot([r, r], [0, 0.12], color="black", lw=1)
        ax.text(r, 0.22, str(r), ha="center", va="bottom", fontsize=8)
    for r in np.arange(lo + 0.5, hi, 1.0):
        ax.plot([r, r], [0, 0.06], color="black", lw=0.6)
    if cd is not None and np.isfinite(cd):
        ax.plot([lo, lo + cd], [1.1, 1.1], color="black", lw=1.5)
        for x in (lo, lo + cd):
            ax.plot([x, x], [1.02, 1.18], color="black", lw=1)
        ax.text(lo + cd / 2, 1.25, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    # cliques just below the axis
    for i, clique in enumerate(cliques):
        xs = [ranks[m] for m in clique]
        y = -0.25 - 0.3 * i
        ax.plot([min(xs) - 0.03, max(xs) + 0.03], [y, y], color="tab:red", lw=3,
                solid_capstyle="round")
    for i, method in enumerate(order):
        r = ranks[method]
        on_left = i < left
        y = base - (i if on_left else k - 1 - i) * 0.55
        x_text = lo - 0.5 if on_left else hi + 0.5
        ax.plot([r, r, x_text], [0, y, y], color="black", lw=0.8)
        ax.plot([r], [0], marker="o", ms=3, color="black")
        ax.text(x_text + (-0.05 if on_left else 0.05), y,
                f"{method} ({r:.2f})" if on_left else f"({r:.2f}) {method}",
                ha="right" if on_left else "left", va="center", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def method_kind_heatmap(panels, *, title, vmin=0.0, vmax=1.0, label="AUPRC"):
    """One heatmap panel per entry of ``panels``: methods (rows) x kinds (columns).

    Parameters
    ----------
    panels : list of (panel title, DataFrame methods x kinds of values); NaN cells (a
        kind without that setting) stay blank. Every panel should have the same rows.
    title : str
    vmin, vmax : the colour scale's range
    label : what the values are (colour bar)

    Returns
    -------
    matplotlib Figure
    """
    plt = pyplot()
    n_rows = max(len(frame.index) for _, frame in panels)
    n_cols = max(len(frame.columns) for _, frame in panels)
    width, height = 1.2 + 0.55 * n_cols, 1.0 + 0.3 * n_rows
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 2.5, height),
                             squeeze=False)
    image = None
    for i, (ax, (name, frame)) in enumerate(zip(axes[0], panels)):
        values = frame.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), vmin=vmin, vmax=vmax, cmap="viridis",
                          aspect="auto")
        ax.set_xticks(range(len(frame.columns)), list(frame.columns), rotation=60,
                      ha="right", fontsize=7)
        ax.set_yticks(range(len(frame.index)), list(frame.index) if i == 0 else [],
                      fontsize=7)
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=5,
                        color="white" if v < (vmin + vmax) / 2 else "black")
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=label)
    fig.suptitle(title, fontsize=10, y=1.06)
    return fig
