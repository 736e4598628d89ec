"""Inversion point across seeds: radii curves, inversion epochs, and how stable the
stragglers are from one initialisation to the next.

Per setting (dataset, subset, parity, judging, inversion rule, noise), over its seeds:

- ``inversion_radii_<setting>.png``: one panel per class ("Class i Radii Over Epoch"),
  one line per seed, the inversion epoch of each seed marked on its line;
- ``inversion_summary.csv``: per class and overall, inversion epoch, straggler count and
  training error at inversion (mean and std over seeds), and the mean pairwise Jaccard and
  overlap z-score of the straggler sets;
- ``inversion_stability.csv``: every pair of seeds, overall and per class: set sizes,
  overlap, Jaccard, the overlap expected by chance and its z-score against the
  hypergeometric null (Ciceri et al.).

Samples whose class never inverted in a run (``hard`` undecided) are left out of every
comparison that involves that run.
"""

import itertools
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from raydiff.scores import jaccard, overlap_zscore  # noqa: E402

NAME = "inversion"
SETTING = ["dataset", "subset_size", "parity", "judge_by_final_model", "inversion_rule",
           "noise_kind", "noise_ratio"]


def stability(sets, *, classes=None):
    """Pairwise agreement of straggler sets.

    Parameters
    ----------
    sets : dict {name: Series indexed by sample_id, values True / False / NA}
        One straggler decision per run (NA = undecided, left out of that run's pairs).
    classes : Series indexed by sample_id, optional
        The class of every sample (the true label, the same in every run): adds one row
        per class and pair.

    Returns
    -------
    DataFrame with one row per (pair, class): ``run_a``, ``run_b``, ``class`` ("all" or the
    class), ``n`` (samples decided in both), ``n_a``, ``n_b``, ``overlap``, ``jaccard``,
    ``expected_overlap`` (|A||B|/n) and ``z`` (:func:`raydiff.scores.overlap_zscore`).
    """
    rows = []
    for (name_a, a), (name_b, b) in itertools.combinations(sets.items(), 2):
        both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
        groups = [("all", both)]
        if classes is not None:
            cls = classes.reindex(both.index)
            groups += [(int(c), part) for c, part in both.groupby(cls, sort=True)]
        for c, part in groups:
            ma, mb = part["a"].to_numpy(dtype=bool), part["b"].to_numpy(dtype=bool)
            n = len(part)
            rows.append({"run_a": name_a, "run_b": name_b, "class": str(c), "n": n,
                         "n_a": int(ma.sum()), "n_b": int(mb.sum()),
                         "overlap": int((ma & mb).sum()), "jaccard": jaccard(ma, mb),
                         "expected_overlap": ma.sum() * mb.sum() / n if n else np.nan,
                         "z": overlap_zscore(ma, mb)})
    return pd.DataFrame(rows, columns=["run_a", "run_b", "class", "n", "n_a", "n_b", "overlap",
                                       "jaccard", "expected_overlap", "z"])


def _load(ctx, run_id):
    per_sample = ctx.read_table(run_id, "per_sample.parquet").set_index("sample_id")
    radii = ctx.read_table(run_id, "radii.parquet")
    info = json.loads(ctx.artifact(run_id, "inversion.json").read_text())
    return per_sample, radii, info


def radii_figure(curves, inversions, num_classes, title=""):
    """Panels of radius vs epoch, one per class (5 per row), one line per run.

    curves : {run label: radii table (epoch, class, radius)}
    inversions : {run label: {class: inversion epoch}} (classes that never inverted absent)
    """
    ncols = min(5, num_classes)
    nrows = -(-num_classes // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False,
                             sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, ax in enumerate(axes.flat):
        if c >= num_classes:
            ax.set_visible(False)
            continue
        for i, (label, radii) in enumerate(curves.items()):
            color = colors[i % len(colors)]
            mine = radii[radii["class"] == c].sort_values("epoch")
            ax.plot(mine["epoch"], mine["radius"], color=color, lw=1.1, label=label)
            epoch = inversions[label].get(c)
            if epoch is not None:
                at = mine.loc[mine["epoch"] == epoch, "radius"]
                ax.axvline(epoch, color=color, ls=":", lw=0.8)
                if len(at):
                    ax.plot([epoch], [at.iloc[0]], "o", color=color, ms=4)
        ax.set_title(f"Class {c} Radii Over Epoch", fontsize=9)
        ax.grid(alpha=0.3)
        if c % ncols == 0:
            ax.set_ylabel("Radius")
        if c >= num_classes - ncols:
            ax.set_xlabel("Epoch")
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _mean_std(values):
    values = pd.to_numeric(pd.Series(values, dtype=float), errors="coerce").dropna()
    return (values.mean() if len(values) else np.nan,
            values.std(ddof=0) if len(values) else np.nan)


def summary(infos, pairs, num_classes):
    """Per class and overall (class "all"): inversion epoch, straggler count and training
    error at inversion, mean and std over runs (overall: of each run's mean inversion epoch
    over its classes, its total straggler count and its error); mean and std of the
    pairwise Jaccard and z-score. ``infos``: {run label: inversion.json contents};
    ``pairs``: :func:`stability`."""
    rows = []
    for c in [*range(num_classes), "all"]:
        if c == "all":
            # one value per run (the mean over its classes), so the std is over seeds
            epochs = [np.mean(list(info["inversion_epoch"].values()))
                      for info in infos.values() if info["inversion_epoch"]]
            counts = [sum(info["stragglers_per_class"]) for info in infos.values()]
            errors = [info["train_error_at_inversion"] for info in infos.values()]
            never = [len(info["never_inverted"]) for info in infos.values()]
        else:
            epochs = [info["inversion_epoch"].get(str(c)) for info in infos.values()]
            epochs = [e for e in epochs if e is not None]
            counts = [info["stragglers_per_class"][c] for info in infos.values()]
            errors = [info["train_error_at_inversion_per_class"][c] for info in infos.values()]
            never = [c in info["never_inverted"] for info in infos.values()]
        row = {"class": str(c), "runs": len(infos), "never_inverted": int(sum(never))}
        for key, values in (("inversion_epoch", epochs), ("stragglers", counts),
                            ("train_error_at_inversion", errors)):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
        mine = pairs[pairs["class"] == str(c)]
        for key in ("jaccard", "z"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(mine[key])
        rows.append(row)
    return pd.DataFrame(rows)


def build(ctx, runs):
    keys = [k for k in SETTING if k in runs.columns]
    summaries, stabilities = [], []
    for values, group in runs.groupby(keys, dropna=False, sort=True):
        setting = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        curves, inversions, infos, sets, classes = {}, {}, {}, {}, None
        for _, run in group.sort_values("seed").iterrows():
            label = f"seed {run['seed']}"
            if label in curves:               # the same seed twice (e.g. other hidden sizes)
                label = f"{label} ({run['run_id'][:6]})"
            per_sample, radii, info = _load(ctx, run["run_id"])
            curves[label], infos[label] = radii, info
            inversions[label] = {int(c): e for c, e in info["inversion_epoch"].items()}
            sets[label] = per_sample["hard"]
            classes = per_sample["label"] if classes is None else classes
        num_classes = len(next(iter(infos.values()))["class_size"])
        pairs = stability(sets, classes=classes)
        stabilities.append(pairs.assign(**setting))
        summaries.append(summary(infos, pairs, num_classes).assign(**setting))
        stem = "_".join(f"{k}-{v}" for k, v in setting.items())
        title = ", ".join(f"{k}={v}" for k, v in setting.items())
        ctx.figure(f"inversion_radii_{stem}.png",
                   radii_figure(curves, inversions, num_classes, title))
    first = lambda df: df[keys + [c for c in df.columns if c not in keys]]  # noqa: E731
    ctx.table("inversion_summary.csv", first(pd.concat(summaries, ignore_index=True)))
    ctx.table("inversion_stability.csv", first(pd.concat(stabilities, ignore_index=True)))
