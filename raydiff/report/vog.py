"""Report of the Variance-of-Gradients sweeps: test error per VoG decile, image grids.

``vog_decile_error.csv``: per setting (dataset, model, noise), stage and decile, the mean
and std over seeds of the test error (percent) of the samples in that VoG decile (the
trial's ``decile_variant``; percentile 5 = lowest VoG). ``vog_decile_error.png``: one
panel per stage, as in the paper. The per-class grids of the lowest and highest VoG
training images are drawn in the trial (they need the images); the first trial of each
setting's are copied here.
"""

import shutil

import pandas as pd

from raydiff.plots.vog import decile_figure
from raydiff.report.base import figures_key

NAME = "vog"
SETTING = ("dataset", "model", "noise_kind", "noise_ratio")


def summarise(deciles):
    keys = [k for k in SETTING if k in deciles.columns]
    out = (deciles.groupby(keys + ["stage", "variant", "decile", "percentile"], sort=True)
           ["error"].agg(error="mean", error_std=lambda v: v.std(ddof=0), runs="count"))
    return out.reset_index()


def build(ctx, runs):
    if not len(runs):
        return
    summary = summarise(ctx.gather(runs, "decile_error.parquet", [*SETTING, "seed"]))
    ctx.table("vog_decile_error.csv", summary)
    keys = [k for k in SETTING if k in summary.columns and summary[k].nunique() > 1]
    setting = (summary[keys].astype(str).agg(" ".join, axis=1) if keys
               else pd.Series("", index=summary.index))
    ctx.figure("vog_decile_error.png", decile_figure(
        summary.assign(setting=setting), spread=True,
        title="test error per VoG decile (mean and std over seeds)"))
    _copy_grids(ctx, runs)


def _copy_grids(ctx, runs):
    keys = [k for k in SETTING if k in runs.columns]
    for _, row in runs.groupby(keys, sort=True, dropna=False).head(1).iterrows():
        for c in range(int(figures_key(row, "grid_classes") or 0)):
            name = f"vog_grid_class{c:03d}.png"
            try:
                source = ctx.artifact(row["run_id"], name)
            except Exception:      # noqa: BLE001 - a tracker's own "no such artifact"
                continue
            if source.exists():
                target = ctx.out / f"vog_{row['run_id']}_{name}"
                shutil.copyfile(source, target)
                ctx.written.append(target)
