"""GASTeN model selection: every step-2 epoch of every run as a point (FID, ACD), the
Pareto front marked, per FID feature network (numbers of different extractors never mix)
and per classifier (each classifier measures its own ACD).

Tables: ``gasten_pareto.csv`` (one row per run and epoch >= 1: classifier, step-1 epoch,
alpha, run, FID, FOCD, ACD, whether the generator was saved, on_front, pareto_best: the
front point nearest the ideal after scaling, among saved epochs, as the ambiguity stage
picks it) and ``gasten_step2_final.csv`` (the last epoch, mean and std over GAN runs).
Figures: ``gasten_pareto_<net>_nf<k>.png`` (the scatter per classifier) and
``gasten_step2_curves.png`` (FID and ACD per epoch, mean over runs, per alpha).
"""

import numpy as np
import pandas as pd

from raydiff.scores.pareto import pareto_best, pareto_front

NAME = "gasten_step2"
CLASSIFIER = ["classifier.classifier", "classifier.nf"]
KEYS = CLASSIFIER + ["step1_epoch", "alpha", "run"]


def epochs_table(ctx, runs):
    """One row per (step-2 run, epoch) with the run's keys."""
    keys = [k for k in KEYS if k in runs.columns]
    parts = []
    for _, run in runs.iterrows():
        table = ctx.read_table(run["run_id"], "metrics.parquet")
        for key in keys:
            table[key] = run[key]
        table["run_id"] = run["run_id"]
        parts.append(table)
    table = pd.concat(parts, ignore_index=True)
    table["alpha"] = table["alpha"].astype(str)
    return table


def mark_front(table):
    """Add ``on_front`` (over all epochs >= 1, step-1 epochs, weights and runs) and
    ``pareto_best`` (saved epochs only) per FID metric and per classifier (each ACD is
    measured by its own classifier); returns the rows of epochs >= 1 in long form (one
    ``fid_net`` column)."""
    out = []
    by = [k for k in CLASSIFIER if k in table.columns]
    for fid_key in sorted(c for c in table.columns if c.startswith("fid_")):
        rows = table[(table["epoch"] >= 1) & table[fid_key].notna()]
        rows = rows.drop(columns=[c for c in rows.columns if c.startswith("fid_") and c != fid_key])
        rows = rows.rename(columns={fid_key: "fid"}).assign(fid_net=fid_key.removeprefix("fid_"))
        for _, part in (rows.groupby(by, dropna=False, sort=True) if by else [(None, rows)]):
            part = part.copy()
            points = part[["fid", "acd"]].to_numpy(float)
            part["on_front"] = pareto_front(points)
            part["pareto_best"] = False
            saved = part["saved"].to_numpy(bool)
            if saved.any():
                best = np.flatnonzero(saved)[pareto_best(points[saved])]
                part.iloc[best, part.columns.get_loc("pareto_best")] = True
            out.append(part)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def build(ctx, runs):
    table = epochs_table(ctx, runs)
    front = mark_front(table)
    if not len(front):
        return
    ctx.table("gasten_pareto.csv", front)
    keys = [k for k in KEYS if k in front.columns and k != "run"]
    last = front.loc[front.groupby("run_id")["epoch"].idxmax()]
    final = last.groupby(["fid_net"] + keys, dropna=False)[["fid", "focd", "acd"]].agg(["mean", "std", "count"])
    final.columns = [f"{a}_{b}" for a, b in final.columns]
    ctx.table("gasten_step2_final.csv", final.reset_index())
    by = ["fid_net"] + [k for k in CLASSIFIER if k in front.columns]
    for values, part in front.groupby(by, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        stem = "_".join([str(values[0])] + [f"{k.split('.')[-1]}{_plain(v)}"
                                            for k, v in zip(by[1:], values[1:])])
        ctx.figure(f"gasten_pareto_{stem}.png", scatter(part, values[0]))
    ctx.figure("gasten_step2_curves.png", curves(front))


def _plain(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def scatter(part, net):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("tab10")
    for k, (alpha, rows) in enumerate(part.groupby("alpha", sort=True)):
        ax.scatter(rows["fid"], rows["acd"], s=12, alpha=0.6, color=cmap(k % 10),
                   label=f"alpha {alpha}")
    front = part[part["on_front"]].sort_values("fid")
    ax.plot(front["fid"], front["acd"], "k-", lw=1, label="Pareto front")
    ax.scatter(front["fid"], front["acd"], s=30, facecolors="none", edgecolors="k")
    best = part[part["pareto_best"]]
    ax.scatter(best["fid"], best["acd"], s=180, marker="*", c="gold", edgecolors="k",
               label="pareto-best (saved)", zorder=3)
    ax.set_xlabel(f"FID ({net} features)")
    ax.set_ylabel("ACD = mean |0.5 - C(G(z))|")
    ax.set_title("step-2 epochs of every run: lower-left is better", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def curves(front):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("fid", "acd")):
        for alpha, rows in front.groupby("alpha", sort=True):
            mean = rows.groupby("epoch")[key].mean()
            ax.plot(mean.index, mean.values, marker="o", ms=3, label=f"alpha {alpha}")
        ax.set_xlabel("step-2 epoch")
        ax.set_ylabel(key.upper())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig
