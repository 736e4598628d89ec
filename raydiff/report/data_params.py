"""Report of the data-parameters sweeps: noisy-label detection and test accuracy.

Tables (mean and std over seeds): ``data_params_detection.csv`` (precision@k, AUROC and
AP of each variant's final score against the injected noise) and
``data_params_accuracy.csv`` (clean test accuracy of the baseline, the data-parameter
variants and the ``retrain`` trials that consumed them). Figures: detection and test
accuracy per epoch, the final sigma of noisy vs clean samples, and the per-class
enrichment figures of one trial per setting (strip, t-SNE, trajectories), copied from its
artifacts.
"""

import shutil

import numpy as np
import pandas as pd

from raydiff.report.base import figures_key

NAME = "data_params"
DETECTION = ("final_detect_precision_at_k", "final_detect_auroc", "final_detect_ap")
SETTING = ("dataset", "noise_kind", "noise_ratio")


def _setting(runs):
    return [k for k in SETTING if k in runs.columns]


def _summary(df, keys, metrics):
    rows = []
    for group, part in df.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["runs"] = len(part)
        for metric in metrics:
            values = pd.to_numeric(part[f"m.{metric}"], errors="coerce").dropna()
            row[f"{metric}_mean"] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=0) if len(values) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _method(runs):
    """'baseline', 'instance', ... for data_params runs; 'retrain <frac> <level>' for retrain."""
    if (runs["experiment"] == "retrain").all():
        level = runs.get("drop_level", pd.Series("global", index=runs.index))
        return "retrain " + runs["subset_frac"].astype(str) + " " + level.astype(str)
    return runs["variant"].astype(str)


def build(ctx, runs):
    keys = _setting(runs)
    runs = runs.assign(method=_method(runs))
    present = [m for m in DETECTION if f"m.{m}" in runs.columns]
    if present:
        ctx.table("data_params_detection.csv", _summary(runs, keys + ["method"], present))

    everything = [runs]
    retrains = ctx.runs[ctx.runs["experiment"] == "retrain"]
    if len(retrains):
        everything.append(retrains.assign(method=_method(retrains)))
    both = pd.concat(everything, ignore_index=True)
    if "m.test_accuracy" in both.columns:
        ctx.table("data_params_accuracy.csv",
                  _summary(both, _setting(both) + ["method"], ["test_accuracy"]))

    _per_epoch_figure(ctx, runs)
    _sigma_figure(ctx, runs)
    _copy_enrichment(ctx, runs, keys)


def _per_epoch_figure(ctx, runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["test_accuracy", "detect_precision_at_k", "detect_auroc", "detect_ap"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, key in zip(axes, panels):
        for method, part in runs.groupby("method", sort=True):
            curves = [ctx.history(r, key) for r in part["run_id"]]
            curves = [c.set_index("step")["value"] for c in curves if len(c)]
            if curves:
                mean = pd.concat(curves, axis=1).mean(axis=1)
                ax.plot(mean.index, mean.values, label=method)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    ctx.figure("data_params_per_epoch.png", fig)


def _sigma_figure(ctx, runs):
    import matplotlib.pyplot as plt

    scored = runs[runs["method"].isin(["instance", "both", "class"])]
    if not len(scored):
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    first = scored.groupby("method", sort=True).head(1)
    for _, row in first.iterrows():
        table = ctx.read_table(row["run_id"], "per_sample.parquet")
        for noisy, style in ((False, "-"), (True, "--")):
            values = np.log(table.loc[table["is_noisy"] == noisy, "score"].to_numpy())
            if len(values):
                ax.hist(values, bins=50, histtype="step", linestyle=style,
                        label=f"{row['method']} {'noisy' if noisy else 'clean'}")
    ax.set_xlabel("log final sigma*")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ctx.figure("data_params_sigma_noisy_vs_clean.png", fig)


def _copy_enrichment(ctx, runs, keys):
    """The enrichment figures were drawn in the trial (they need the images): copy those of
    the first instance-parameter trial of each setting."""
    scored = runs[runs["method"].isin(["instance", "both"])]
    if not len(scored):
        return
    for _, row in scored.groupby(keys or ["method"], sort=True).head(1).iterrows():
        for c in range(int(figures_key(row, "enrich_classes") or 0)):
            for kind in ("strip", "tsne", "trajectories"):
                name = f"enrich_class{c:03d}_{kind}.png"
                try:
                    source = ctx.artifact(row["run_id"], name)
                except Exception:      # noqa: BLE001 - a tracker's own "no such artifact"
                    continue
                if not source.exists():
                    continue
                target = ctx.out / f"data_params_{row['run_id']}_{name}"
                shutil.copyfile(source, target)
                ctx.written.append(target)
