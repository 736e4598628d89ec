"""Report of the VoG toy sweep: Spearman correlation of VoG and distance to the boundary.

``vog_toy_spearman.csv``: per split, stage and normalisation (the trial's own axes), the
mean and std over seeds of the Spearman correlation between VoG and the perpendicular
distance to the learned boundary (negative: high VoG close to the boundary).
Figures, redrawn from the first seed's artifacts: ``vog_toy_boundary_<split>.png``
(decision regions with the points) and ``vog_toy_distance_<split>_<normalization>.png``
(VoG against distance, one panel per stage).
"""

import numpy as np
import pandas as pd

from raydiff.plots.common import pyplot
from raydiff.plots.vog import boundary_figure, distance_figure
from raydiff.scores.vog import STAGES, column

NAME = "vog_toy"
AXES = ("split", "vog_stage", "normalization")


def build(ctx, runs):
    if not len(runs) or "m.spearman" not in runs.columns:
        return
    axes = [k for k in ("output", *AXES) if k in runs.columns]
    values = runs.assign(spearman=pd.to_numeric(runs["m.spearman"], errors="coerce"))
    summary = (values.groupby(axes, sort=True)["spearman"]
               .agg(spearman_mean="mean", spearman_std=lambda v: v.std(ddof=0), runs="count")
               .reset_index())
    ctx.table("vog_toy_spearman.csv", summary)
    _figures(ctx, runs)


def _figures(ctx, runs):
    import json

    plt = pyplot()
    first = runs.sort_values("seed").iloc[0]
    same = runs[runs["seed"] == first["seed"]]
    table = ctx.read_table(first["run_id"], "per_sample.parquet")
    boundary = json.loads(ctx.artifact(first["run_id"], "boundary.json").read_text())
    w = np.asarray(boundary["w"])
    for split in sorted(set(same["split"])):
        part = table[table["split"] == split]
        ctx.figure(f"vog_toy_boundary_{split}.png", boundary_figure(
            part, w, boundary["c"], title=f"seed {first['seed']}, {split} points"))
        for norm in sorted(set(same["normalization"])):
            fig, axes = plt.subplots(1, len(STAGES), figsize=(3.6 * len(STAGES), 3.4),
                                     sharey=True)
            for ax, stage in zip(axes, STAGES):
                match = same[(same["split"] == split) & (same["vog_stage"] == stage)
                             & (same["normalization"] == norm)]
                rho = (f", Spearman {float(match['m.spearman'].iloc[0]):.2f}"
                       if len(match) else "")
                distance_figure(part, column(stage, norm), ax=ax, title=f"{stage}{rho}")
            fig.suptitle(f"seed {first['seed']}, {split}, {norm}", fontsize=9)
            ctx.figure(f"vog_toy_distance_{split}_{norm}.png", fig)
