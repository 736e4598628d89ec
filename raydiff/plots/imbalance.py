"""The imbalance benchmark's accuracies: one grid for the whole question, one panel per
cell on request."""

from raydiff.plots.common import pyplot

TEST_SETS = {"full": "Full", "hard": "Hard", "easy": "Easy"}


def _lines(ax, rows, test_set):
    """Accuracy on ``test_set`` over the remaining ratio, a line per train ratio (mean
    and std over models and seeds as error bars)."""
    for t, part in rows.groupby("train_ratio"):
        part = part.sort_values("remaining_train_ratio")
        ax.errorbar(part["remaining_train_ratio"], part[f"acc_{test_set}_mean"],
                    yerr=part[f"acc_{test_set}_std"].fillna(0), marker="o", markersize=3,
                    capsize=2, label=f"train ratio {t:g}")
    ax.grid(alpha=0.3)


def _reduced(rows):
    """Which samples the cells of ``rows`` reduce: "Easy", "Hard", or both."""
    kinds = {"Hard" if bool(v) else "Easy" for v in rows.get("reduce_hard", [False])}
    return " / ".join(sorted(kinds))


def accuracy_grid(summary, *, row_keys):
    """All accuracies of an imbalance sweep in one figure.

    summary : DataFrame, one row per (setting, ``train_ratio``, ``remaining_train_ratio``)
        with ``acc_<set>_mean`` and ``acc_<set>_std`` for set in full / hard / easy (%).
    row_keys : the setting keys that make a row of panels (identify's strategy, noise
        ratio and kind, ...), in the order the row labels read; a key with one value in
        the whole summary goes into the title instead.
    Returns a figure of one row per setting and three columns (full, hard and easy test
    set); inside a panel, accuracy (y, higher is better) over the share of the reduced
    training samples kept (x), a line per train ratio. The y axes are shared, so a row
    and a column read against each other.
    """
    plt = pyplot()
    keys = [k for k in row_keys if k in summary.columns]
    varying = [k for k in keys if summary[k].nunique(dropna=False) > 1]
    fixed = {k: summary[k].iloc[0] for k in keys if k not in varying}
    groups = list(summary.groupby(varying, dropna=False, sort=True)) if varying else [((), summary)]
    fig, axes = plt.subplots(len(groups), len(TEST_SETS), sharex=True, sharey=True,
                             figsize=(3.4 * len(TEST_SETS), 0.6 + 2.3 * len(groups)),
                             squeeze=False)
    for r, (values, rows) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        label = "\n".join(f"{k.split('.')[-1]}={v}" for k, v in zip(varying, values))
        for c, test_set in enumerate(TEST_SETS):
            ax = axes[r, c]
            _lines(ax, rows, test_set)
            if r == 0:
                ax.set_title(f"{TEST_SETS[test_set]} test set", fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{label}\naccuracy (%)" if label else "accuracy (%)", fontsize=8)
            if r == len(groups) - 1:
                ax.set_xlabel(f"share of {_reduced(summary).lower()} training samples kept",
                              fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="best")
    title = "Imbalance: accuracy on the observed labels"
    if fixed:
        title += " (" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in fixed.items()) + ")"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def accuracy_cell(rows, test_set, title):
    """One setting's accuracy on ``test_set`` over the remaining ratio, a line per train
    ratio: a single panel of :func:`accuracy_grid`, for a figure of its own."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, rows, test_set)
    ax.set_xlabel(f"Proportion of {_reduced(rows)} Samples Remaining in Training Set")
    ax.set_ylabel(f"Accuracy on {TEST_SETS[test_set]} Test Set (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig
