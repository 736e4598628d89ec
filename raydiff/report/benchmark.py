"""Noisy-label detection across every method of a sweep: quality, agreement and cost.

Takes every finished run, of any experiment, whose ``per_sample.parquet`` has ``is_noisy``
and ``score``. Each ``score_<name>`` column of a table is a method called ``<name>`` (one
training run scoring several ways: ``dynamics``, ``identify``); a table without them is
one method named after its stage, plus ``[key=value]`` for the keys that vary between
that stage's runs (other than seed and noise). A name two stages share gets its stage as
a prefix. Runs repeating a method at the same dataset, noise kind, noise ratio and seed (an
``identify`` strategy grid computes all three scores in each trial) count once. Only
the training split is scored. Everything is grouped by noise kind (``uniform``, ``pair``:
the table's or run's ``hardness``, else ``noise_kind``; runs from before ``noise_kind``
existed count as uniform) and ratio (``hardness_ratio``, else ``noise_ratio``). The
hardness report (:mod:`raydiff.report.hardness`) reads the same tables for every kind of
hardness, ``is_hard`` as the truth.

Written, when at least one such table holds injected noise:

- ``benchmark_per_run.csv``: method, setting, AUROC, average precision, precision at
  k = noise ratio, and the seconds of the trial that produced it (a config trained in a
  pack: its share of the pack, the pack's seconds over its configs), plus the upstream
  trials' seconds it reports as ``upstream_seconds`` (e.g. the crossval folds of confident
  learning);
  ``same_labels`` is False where a run's observed labels differ from those of the largest
  table of its setting (a method that drew its noise over another pool);
- ``benchmark_detection.csv``: mean and std (over seeds, ddof 1) per method, noise kind and
  noise ratio; ``benchmark_results.md``: the same as Markdown, one table per dataset and
  noise kind, best value in bold;
- ``benchmark_agreement.csv`` and the heatmaps ``benchmark_spearman.png`` and
  ``benchmark_jaccard.png``: rank correlation and overlap of the top-k sets (k = noise
  ratio, or 10% without noise) between methods, on the samples both scored, averaged
  over seeds, one panel per dataset, noise kind and ratio;
- ``benchmark_auroc.png`` (AUROC against noise ratio, one panel per noise kind),
  ``benchmark_cost.png`` (AUROC against trial seconds, to pick a method; one panel per kind) and ``benchmark_datamap.png`` (the Cartography
  data map, variability against confidence, noisy samples in red) when a run has
  ``carto_confidence`` and ``carto_variability`` columns.
"""

import warnings

import numpy as np
import pandas as pd

from raydiff.report.hardness import kind_of, ratio_of, scored_tables
from raydiff.scores.metrics import DETECTION, detection

NAME = "*"
TABLE = "per_sample.parquet"
NOISE = ["noise_kind", "noise_ratio"]
SETTING = ["dataset", *NOISE, "seed"]
QUALITY = list(DETECTION)
TOP_K_WITHOUT_NOISE = 0.1


def collect(ctx, runs):
    """Scored entries: a DataFrame with one row per (run, method) and a dict of score
    Series (indexed by sample_id) and noise masks keyed by the row's position."""
    rows, scores = [], {}
    for stage, varying, run, table in scored_tables(ctx, runs):
        if not {"sample_id", "is_noisy", "score"} <= set(table.columns):
            continue
        if "split" in table.columns:
            table = table[table["split"].astype(str) == "train"]
        columns = {c.removeprefix("score_"): c for c in table.columns
                   if c.startswith("score_")}
        if not columns:
            suffix = ",".join(f"{k}={run[k]}" for k in varying)
            columns = {f"{stage}[{suffix}]" if suffix else str(stage): "score"}
        noisy = table["is_noisy"].to_numpy(dtype=bool)
        seconds = float(run.get("trial_seconds", np.nan))
        upstream = pd.to_numeric(run.get("m.upstream_seconds", 0.0), errors="coerce")
        seconds += 0.0 if pd.isna(upstream) else float(upstream)
        noise = ratio_of(run, noisy)
        kind = _noise_kind(run, table)
        for method, column in columns.items():
            score = table[column].to_numpy(dtype=np.float64)
            key = len(rows)
            rows.append({"method": method, "stage": stage, "run_id": run["run_id"],
                         "dataset": run.get("dataset", ""), "noise_kind": kind,
                         "noise_ratio": float(noise),
                         "seed": run.get("seed", 0), "n": len(score),
                         "n_noisy": int(noisy.sum()), "seconds": seconds,
                         "methods_in_run": len(columns), **quality(score, noisy, noise)})
            ids = table["sample_id"].to_numpy()
            labels = table["observed_label"] if "observed_label" in table.columns else None
            scores[key] = (pd.Series(score, index=ids), noisy,
                           None if labels is None else pd.Series(labels.to_numpy(), index=ids))
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame, scores
    # a method name two stages share gets the stage as prefix
    clash = frame.groupby("method")["stage"].transform("nunique") > 1
    frame.loc[clash, "method"] = frame.loc[clash, "stage"].astype(str) + "." + frame.loc[clash, "method"]
    frame = frame.drop_duplicates(["method"] + SETTING, keep="first")
    scores = {k: scores[k] for k in frame.index}
    frame["same_labels"] = same_labels(frame, scores)
    return frame, scores


def _noise_kind(run, table):
    """The run's kind of noise (:func:`raydiff.report.hardness.kind_of`: the table's or the
    run's ``hardness``, else ``noise_kind``, else uniform for older runs)."""
    return kind_of(run, table)


def same_labels(frame, scores):
    """Per entry: whether its observed labels equal, on the samples both scored, those of
    the largest table of its setting (dataset, noise kind and ratio, seed). False flags a method
    that scored another noisy draw (e.g. one holding out a test split first)."""
    out = pd.Series(True, index=frame.index)
    for _, cell in frame.groupby(SETTING, sort=False, dropna=False):
        reference = scores[cell["n"].idxmax()][2]
        for key in cell.index:
            labels = scores[key][2]
            if reference is None or labels is None:
                continue
            shared = labels.index.intersection(reference.index)
            out[key] = bool((labels[shared] == reference[shared]).all())
    return out


def quality(score, noisy, noise_ratio):
    """AUROC, AP and precision at k = noise ratio of ``score`` for the noisy samples
    (NaN without noise): :func:`raydiff.scores.metrics.detection`, the numbers every
    experiment reports too."""
    return detection(score, noisy, noise_ratio)


def summarise(frame):
    """Mean and std over seeds of every quality measure and of the seconds, per method,
    noise kind and noise ratio (rows with injected noise only)."""
    noisy = frame[frame["n_noisy"] > 0]
    grouped = noisy.groupby(["dataset", "method", *NOISE], sort=True)
    out = grouped[QUALITY + ["seconds"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = grouped.size()
    if "same_labels" in noisy.columns:
        out["same_labels"] = grouped["same_labels"].all()
    return out.reset_index()


def method_order(summary):
    """Methods by mean AUROC at the highest noise ratio (over the kinds), best first."""
    top = summary[summary["noise_ratio"] == summary["noise_ratio"].max()]
    ranked = top.groupby("method")["auroc_mean"].mean().sort_values(ascending=False)
    rest = sorted(set(summary["method"]) - set(ranked.index))
    return list(ranked.index) + rest


def agreement(frame, scores, order):
    """Spearman correlation and top-k Jaccard of every pair of methods, per dataset, noise
    kind and noise ratio, averaged over seeds; long DataFrame."""
    rows = []
    for (dataset, kind, noise), part in frame.groupby(["dataset", *NOISE], sort=True):
        per_seed = []
        for _, cell in part.groupby("seed", sort=True):
            if len(cell) < 2:
                continue
            table = pd.DataFrame({m: scores[i][0] for i, m in zip(cell.index, cell["method"])}
                                 ).dropna()
            methods = [m for m in order if m in table.columns]
            table = table[methods]
            rho = table.corr(method="spearman")
            k = max(1, int(len(table) * (noise if noise > 0 else TOP_K_WITHOUT_NOISE)))
            top = {m: set(table[m].sort_values(ascending=False, kind="stable").index[:k])
                   for m in methods}
            jac = pd.DataFrame([[len(top[a] & top[b]) / len(top[a] | top[b]) for b in methods]
                                for a in methods], index=methods, columns=methods)
            per_seed.append((rho, jac))
        if not per_seed:
            continue
        # a method missing at some seed is averaged over the seeds that have it
        methods = [m for m in order if any(m in r.index for r, _ in per_seed)]
        stacks = [np.stack([pair[i].reindex(index=methods, columns=methods).to_numpy(dtype=float)
                            for pair in per_seed]) for i in (0, 1)]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # pairs never scored together
            rho, jac = (np.nanmean(stack, axis=0) for stack in stacks)
        seeds = (~np.isnan(stacks[1])).sum(axis=0)
        for ia, a in enumerate(methods):
            for ib, b in enumerate(methods):
                rows.append({"dataset": dataset, "noise_kind": kind, "noise_ratio": noise,
                             "method_a": a,
                             "method_b": b, "spearman": rho[ia, ib], "jaccard": jac[ia, ib],
                             "seeds": int(seeds[ia, ib])})
    return pd.DataFrame(rows)


def results_markdown(summary, order):
    """Markdown tables, one per dataset and noise kind: AUROC and AP (mean ± std over seeds)
    per method at each noise ratio, and the mean trial seconds; the best mean of each
    column in bold."""
    lines = []
    for (dataset, kind), part in summary.groupby(["dataset", "noise_kind"], sort=True):
        ratios = sorted(part["noise_ratio"].unique())
        head = ["method"] + [f"{m} @ {r:g}" for r in ratios for m in ("AUROC", "AP")] + ["s / config"]
        lines += [f"Noisy-label detection on {dataset or 'the dataset'}, {kind} noise (mean ± "
                  f"std over {int(part['seeds'].max())} seeds)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        best = {(r, m): part.loc[part["noise_ratio"] == r, f"{m}_mean"].max()
                for r in ratios for m in ("auroc", "ap")}
        other = set(part.loc[~part["same_labels"], "method"]) if "same_labels" in part else set()
        for method in [m for m in order if m in set(part["method"])]:
            cells = [method + (" †" if method in other else "")]
            rows = part[part["method"] == method].set_index("noise_ratio")
            for r in ratios:
                for m in ("auroc", "ap"):
                    if r not in rows.index or pd.isna(rows.loc[r, f"{m}_mean"]):
                        cells.append("")
                        continue
                    mean, std = rows.loc[r, f"{m}_mean"], rows.loc[r, f"{m}_std"]
                    text = f"{mean:.3f}" + ("" if pd.isna(std) else f" ± {std:.3f}")
                    cells.append(f"**{text}**" if np.isclose(mean, best[(r, m)]) else text)
            cells.append(f"{rows['seconds_mean'].mean():.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        top = part[part["noise_ratio"] == ratios[-1]].sort_values("auroc_mean", ascending=False)
        lines += ["", f"Best AUROC at {kind} noise {ratios[-1]:g}: **{top.iloc[0]['method']}** "
                      f"({top.iloc[0]['auroc_mean']:.3f}); best AP: "
                      f"**{top.sort_values('ap_mean', ascending=False).iloc[0]['method']}**."]
        if other:
            lines.append("† scored another draw of noisy labels than the other methods "
                         "(its training pool excludes a held-out test split).")
        lines.append("")
    return "\n".join(lines)


def _heatmaps(ctx, agree, column, name, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(agree.groupby(["dataset", *NOISE], sort=True))
    n = max(part["method_a"].nunique() for _, part in panels)
    size = 1.0 + 0.45 * n
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels) + 3, size),
                             squeeze=False)
    first = None
    for ax, ((dataset, kind, noise), part) in zip(axes[0], panels):
        order = list(dict.fromkeys(part["method_a"]))      # best first, as agreement() wrote
        first = order if first is None else first
        matrix = part.pivot(index="method_a", columns="method_b", values=column
                            ).loc[order, order].to_numpy(dtype=float)
        image = ax.imshow(matrix, vmin=-1 if column == "spearman" else 0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(order)), order, rotation=90, fontsize=7)
        # the same rows as the first panel: its labels serve them all
        ax.set_yticks(range(len(order)), order if order != first or ax is axes[0][0] else [],
                      fontsize=7)
        for i in range(len(order)):
            for j in range(len(order)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="white" if matrix[i, j] < 0.5 else "black")
        ax.set_title(f"{dataset} {kind} noise {noise:g}", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    ctx.figure(name, fig)


def _kind_panels(summary, width=5):
    import matplotlib.pyplot as plt

    kinds = sorted(summary["noise_kind"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(width * len(kinds) + 1, 4), squeeze=False,
                             sharey=True)
    return fig, list(zip(axes[0], kinds))


def _auroc_figure(ctx, summary, order):
    fig, panels = _kind_panels(summary)
    for ax, kind in panels:
        part = summary[summary["noise_kind"] == kind]
        for method in order:
            rows = part[part["method"] == method].sort_values("noise_ratio")
            if len(rows):
                ax.errorbar(rows["noise_ratio"], rows["auroc_mean"],
                            yerr=rows["auroc_std"].fillna(0), marker="o", capsize=3,
                            label=method)
        ax.set_xlabel(f"injected {kind} noise ratio")
        ax.set_title(f"{kind} noise", fontsize=9)
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel("AUROC for the noisy labels")
    panels[-1][0].legend(fontsize=7, loc="best")
    ctx.figure("benchmark_auroc.png", fig)


def _cost_figure(ctx, summary):
    fig, panels = _kind_panels(summary)
    for ax, kind in panels:
        part = summary[summary["noise_kind"] == kind]
        top = part[part["noise_ratio"] == part["noise_ratio"].max()]
        ax.scatter(top["seconds_mean"], top["auroc_mean"])
        for _, row in top.iterrows():
            ax.annotate(row["method"], (row["seconds_mean"], row["auroc_mean"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per trial producing the score (log)")
        ax.set_title(f"AUROC at {kind} noise {top['noise_ratio'].max():g}", fontsize=9)
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel("AUROC")
    ctx.figure("benchmark_cost.png", fig)


def _datamap(ctx, frame, runs):
    import matplotlib.pyplot as plt

    carto = []
    for run_id, part in frame.groupby("run_id", sort=False):
        table = ctx.read_table(run_id, TABLE)
        if {"carto_confidence", "carto_variability"} <= set(table.columns):
            carto.append((part.iloc[0], table))
    if not carto:
        return
    carto.sort(key=lambda item: (item[0]["noise_kind"], item[0]["noise_ratio"],
                                 str(item[0]["seed"])))
    first = {}
    for row, table in carto:
        first.setdefault((row["noise_kind"], row["noise_ratio"]), (row, table))
    fig, axes = plt.subplots(1, len(first), figsize=(4 * len(first), 4), squeeze=False)
    for ax, ((kind, noise), (row, table)) in zip(axes[0], sorted(first.items())):
        noisy = table["is_noisy"].to_numpy(dtype=bool)
        for mask, colour, label in ((~noisy, "tab:blue", "clean"), (noisy, "tab:red", "noisy")):
            ax.scatter(table.loc[mask, "carto_variability"], table.loc[mask, "carto_confidence"],
                       s=3, alpha=0.5, c=colour, label=f"{label} ({mask.sum()})")
        ax.set_xlabel("variability")
        ax.set_ylabel("confidence")
        ax.set_title(f"{kind} noise {noise:g}, seed {row['seed']}", fontsize=9)
        ax.legend(fontsize=7, markerscale=3)
    fig.suptitle("Data map (Dataset Cartography)", fontsize=10)
    ctx.figure("benchmark_datamap.png", fig)


def build(ctx, runs):
    frame, scores = collect(ctx, runs)
    if not len(frame) or not (frame["n_noisy"] > 0).any():
        return
    ctx.table("benchmark_per_run.csv", frame)
    summary = summarise(frame)
    ctx.table("benchmark_detection.csv", summary)
    order = method_order(summary)
    markdown = results_markdown(summary, order)
    path = ctx.out / "benchmark_results.md"
    path.write_text(markdown)
    ctx.written.append(path)
    agree = agreement(frame, scores, order)
    if len(agree):
        ctx.table("benchmark_agreement.csv", agree)
        _heatmaps(ctx, agree, "spearman", "benchmark_spearman.png",
                  "Spearman rank correlation between methods")
        _heatmaps(ctx, agree, "jaccard", "benchmark_jaccard.png",
                  "Jaccard overlap of the top-k sets (k = noise ratio)")
    _auroc_figure(ctx, summary, order)
    _cost_figure(ctx, summary)
    _datamap(ctx, frame, runs)
