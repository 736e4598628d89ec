"""Which method finds which kind of hardness: detection, ranks, critical differences and
seed stability across every method of a sweep (docs/hardness_benchmark.md has the protocol).

Takes every finished run, of any experiment, whose ``per_sample.parquet`` has
``sample_id``, ``score`` and the ground truth: ``is_hard`` (True for exactly the perturbed
samples), or, in tables from before it existed, ``is_noisy``. The kind of hardness is the
table's ``hardness`` column, else the run's ``hardness`` key, else its ``noise_kind``
(table, then run), else ``uniform``; the proportion p (``ratio``) is the run's
``hardness_ratio``, else its ``noise_ratio``, else the table's hard fraction. Only the
training split is scored, and only settings that hold hard samples.

Methods: every ``score_<name>`` column of a table is a method ``<name>``; the run's own
``score`` is one more, named after its stage (plus ``[key=value]`` for the keys that vary
between the stage's runs), unless it equals one of the run's ``score_<name>`` columns (it
is then that method already). A ``score_<name>`` column whose values differ between runs
of one stage that differ only in such keys (e.g. a model grid) becomes one method per
variant (``<name>[model=lenet]``); runs that agree (an ``identify`` strategy grid
computes all its scores from one training) count once. A name two stages share gets its
stage as a prefix.

Written, when at least one such table holds hard samples:

- ``hardness_per_run.csv``: one row per method and run: AUPRC (average precision with the
  hard samples as the positive class), AUROC, precision at k = number of hard samples;
- ``hardness_detection.csv``: mean and std over seeds (ddof 1) per dataset, kind, ratio
  and method, the seeds counted, and the chance AUPRC (``hard_fraction``);
- ``hardness_ranks.csv``: per dataset, kind, ratio and method the rank by AUPRC among the
  methods of each seed (1 = best, ties share the mean rank), mean and std over seeds;
  rows with ``ratio`` ``all`` average over every (ratio, seed) of the kind;
- ``hardness_friedman.csv`` and ``hardness_posthoc.csv``: per dataset and kind, the
  Friedman test over the blocks (ratio, seed) of the methods present in all of them, its
  Nemenyi post-hoc p-values and critical difference; ``hardness_cd_<kind>.png``: the
  critical-difference diagram;
- ``hardness_stability.csv``: per dataset, kind, ratio and method the mean Spearman
  correlation of the method's scores between every pair of seeds, on the samples both
  scored;
- ``hardness_tables.md``: an overview, method x kind (AUPRC at each kind's middle
  proportion, mean rank over kinds), then one table per kind (AUPRC and AUROC per ratio,
  mean rank, stability, the Friedman result), and ``hardness_auprc.png``: AUPRC as a
  heatmap, method x kind, one panel per ratio (or per place in each kind's grid,
  :func:`heatmap_panels`).
"""

import re
import warnings

import numpy as np
import pandas as pd

from raydiff.data.hardness import HARDNESS_KINDS
from raydiff.report.base import DEFAULT_NOISE_KIND
from raydiff.scores.metrics import HARDNESS, hardness_detection, seed_stability

NAME = "*"
TABLE = "per_sample.parquet"
KIND = ["dataset", "hardness"]
CELL = [*KIND, "ratio"]
SETTING = [*CELL, "seed"]
# what MLflow says of a run, not its config: never a variant of a method
RUN_COLUMNS = {"run_id", "status", "stage", "experiment", "session", "trial_seconds",
               "start_time"}
NOT_VARIANTS = {"seed", "noise_ratio", "noise_kind", "hardness", "hardness_ratio", "fold",
                "subset_seed", "data_root", "download"}
ALPHA = 0.05          # the post-hoc test's level: the cliques and the critical difference
ALL = "all"           # hardness_ranks.csv's ratio of the rows over every ratio of a kind


# -- collecting: per-sample tables -> one entry per (run, method) --------------------------

def truth(table):
    """The ground truth of a per-sample table: bool (N,) ``is_hard``, else ``is_noisy``;
    None when it has neither."""
    for column in ("is_hard", "is_noisy"):
        if column in table.columns:
            return table[column].fillna(False).to_numpy(dtype=bool)
    return None


def _present(value):
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and \
        not (np.ndim(value) == 0 and pd.isna(value))


def kind_of(run, table):
    """The kind of hardness of a run: its table's ``hardness`` column, its ``hardness``
    key, its ``noise_kind`` (table, then run), else uniform (runs from before the kinds)."""
    for source, key in ((table, "hardness"), (run, "hardness"), (table, "noise_kind"),
                        (run, "noise_kind")):
        if source is table:
            values = table[key].dropna() if key in table.columns else ()
            if len(values):
                return str(values.iloc[0])
        elif _present(run.get(key)):
            return str(run[key])
    return DEFAULT_NOISE_KIND


def ratio_of(run, hard):
    """The proportion p of a run: its ``hardness_ratio``, else its ``noise_ratio``, else
    the hard fraction of its table ``hard`` (N,)."""
    for key in ("hardness_ratio", "noise_ratio"):
        value = pd.to_numeric(run.get(key), errors="coerce")
        if _present(value):
            return float(value)
    return float(np.mean(hard)) if len(hard) else 0.0


def _same_scores(a, b):
    """Whether two score Series (indexed by sample_id) hold the same scores of the same
    samples, up to float rounding (a packed run and one alone)."""
    if len(a) != len(b) or not a.index.sort_values().equals(b.index.sort_values()):
        return False
    b = b.reindex(a.index)
    return bool(np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-4, atol=1e-6, equal_nan=True))


def methods_of(table, own_name):
    """``{method: column}`` of a table: every ``score_<name>`` column, plus ``score`` as
    ``own_name`` unless it equals one of them. Second value: the set of methods that come
    from ``score_`` columns."""
    columns = {c.removeprefix("score_"): c for c in table.columns if c.startswith("score_")}
    own = table["score"].to_numpy(dtype=np.float64)
    if not any(np.allclose(own, table[c].to_numpy(dtype=np.float64), equal_nan=True)
               for c in columns.values()):
        return {**columns, own_name: "score"}, set(columns)
    return columns, set(columns)


def varying_keys(runs):
    """Config keys whose value differs between ``runs`` (one stage), other than the setting."""
    keys = [c for c in runs.columns if c not in RUN_COLUMNS and not c.startswith("m.")
            and "." not in c and c not in NOT_VARIANTS]
    return [k for k in keys if runs[k].astype(str).nunique() > 1]


def scored_tables(ctx, runs):
    """(stage, its varying keys, run, the run's per-sample table) for every run of
    ``runs`` that logged one, stage by stage (runs without a stage tag by experiment)."""
    if "stage" not in runs.columns:
        runs = runs.assign(stage=runs["experiment"])
    for stage, part in runs.groupby("stage", sort=True, dropna=False):
        varying = varying_keys(part)
        for _, run in part.iterrows():
            if ctx.has_artifact(run["run_id"], TABLE):
                yield stage, varying, run, ctx.read_table(run["run_id"], TABLE)


def collect(ctx, runs):
    """One row per (run, method) with the run's setting and the three detection numbers,
    and ``{row index: score Series indexed by sample_id}``; only settings with hard
    samples (and some not hard)."""
    rows, scores = [], {}
    for stage, varying, run, table in scored_tables(ctx, runs):
        hard = truth(table)
        if hard is None or not {"sample_id", "score"} <= set(table.columns):
            continue
        if "split" in table.columns:
            keep = (table["split"].astype(str) == "train").to_numpy()
            table, hard = table[keep], hard[keep]
        if not hard.any() or hard.all():
            continue
        variant = ",".join(f"{k}={run[k]}" for k in varying)
        own = f"{stage}[{variant}]" if variant else str(stage)
        columns, from_columns = methods_of(table, own)
        ids = table["sample_id"].to_numpy()
        setting = {"dataset": run.get("dataset", "") if _present(run.get("dataset"))
                   else "", "hardness": kind_of(run, table),
                   "ratio": ratio_of(run, hard), "seed": run.get("seed", 0)}
        for method, column in columns.items():
            score = table[column].to_numpy(dtype=np.float64)
            if np.isnan(score).any():
                # a method that could not score every sample would be judged on
                # another set than the rest: left out, and said so
                warnings.warn(f"hardness report: method {method!r} of run "
                              f"{run['run_id']} has NaN scores; left out", stacklevel=2)
                continue
            scores[len(rows)] = pd.Series(score, index=ids)
            rows.append({"method": method, "stage": stage, "run_id": run["run_id"],
                         **setting, "variant": variant,
                         "from_column": method in from_columns, "n": len(score),
                         "n_hard": int(hard.sum()),
                         **hardness_detection(score, hard)})
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame, scores
    frame = _split_variants(frame, scores)
    clash = frame.groupby("method")["stage"].transform("nunique") > 1
    frame.loc[clash, "method"] = (frame.loc[clash, "stage"].astype(str) + "."
                                  + frame.loc[clash, "method"])
    frame = frame.drop_duplicates(["method", *SETTING], keep="first")
    scores = {k: scores[k] for k in frame.index}
    return frame.drop(columns=["variant", "from_column"]), scores


def _split_variants(frame, scores):
    """Name a stage's ``score_<name>`` method per variant where its runs of one setting
    disagree on the scores (see the module docstring)."""
    frame = frame.copy()
    columns = frame[frame["from_column"] & (frame["variant"] != "")]
    for (stage, method), part in columns.groupby(["stage", "method"], sort=False):
        differ = any(not _same_scores(scores[cell.index[0]], scores[key])
                     for _, cell in part.groupby(SETTING, sort=False, dropna=False)
                     for key in cell.index[1:])
        if differ:
            frame.loc[part.index, "method"] = [f"{method}[{v}]" for v in part["variant"]]
    return frame


# -- tables ---------------------------------------------------------------------------------

def summarise(frame):
    """Mean and std (ddof 1) over seeds of AUPRC, AUROC and precision at k per dataset,
    kind, ratio and method, the seeds counted and the chance AUPRC (hard fraction)."""
    grouped = frame.assign(hard_fraction=frame["n_hard"] / frame["n"]).groupby(
        [*CELL, "method"], sort=True)
    out = grouped[list(HARDNESS)].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = grouped.size()
    out["hard_fraction"] = grouped["hard_fraction"].mean()
    return out.reset_index()


def block_ranks(frame):
    """``frame`` with column ``rank``: each method's rank by AUPRC among the methods of its
    setting (dataset, kind, ratio, seed); 1 = best, ties share their mean rank."""
    ranked = frame.copy()
    ranked["rank"] = ranked.groupby(SETTING, sort=False, dropna=False)["auprc"].rank(
        ascending=False, method="average")
    return ranked


def rank_table(ranked):
    """Mean and std of the ranks over seeds per dataset, kind, ratio and method, and over
    every (ratio, seed) block of a kind as ratio ``all``; best first within each group."""
    def agg(part, keys):
        grouped = part.groupby(keys, sort=True, dropna=False)
        out = grouped["rank"].agg(rank_mean="mean", rank_std="std")
        out["auprc_mean"] = grouped["auprc"].mean()
        out["blocks"] = grouped.size()
        return out.reset_index()

    per_ratio = agg(ranked, [*CELL, "method"])
    overall = agg(ranked, [*KIND, "method"]).assign(ratio=ALL)
    per_ratio["ratio"] = per_ratio["ratio"].map(lambda r: f"{r:g}")
    out = pd.concat([per_ratio, overall[per_ratio.columns]], ignore_index=True)
    return out.sort_values([*KIND, "ratio", "rank_mean"], kind="stable").reset_index(drop=True)


def friedman(ranked):
    """The Friedman test and Nemenyi post-hoc of every (dataset, kind).

    Blocks are the (ratio, seed) settings of the kind, treatments the methods present in
    every block (the others are named in ``left_out``). Returns a list of dicts: dataset,
    hardness, methods, blocks, statistic, pvalue, cd (the Nemenyi critical difference at
    ALPHA), left_out, ranks (Series: mean rank over the blocks, 1 = best), pvalues
    (DataFrame, pairwise post-hoc p-values) and cliques (lists of methods whose ranks do
    not differ significantly). ``statistic`` and the rest are NaN / empty where the test
    cannot run (fewer than 3 methods or 2 blocks).
    """
    tests = []
    for (dataset, kind), part in ranked.groupby(KIND, sort=True, dropna=False):
        matrix = part.pivot_table(index=["ratio", "seed"], columns="method", values="auprc",
                                  aggfunc="first")
        complete = matrix.dropna(axis=1)
        left_out = sorted(set(matrix.columns) - set(complete.columns))
        n, k = complete.shape
        test = {"dataset": dataset, "hardness": kind, "methods": k, "blocks": n,
                "statistic": np.nan, "pvalue": np.nan, "cd": np.nan,
                "left_out": ";".join(left_out), "ranks": pd.Series(dtype=float),
                "pvalues": pd.DataFrame(), "cliques": []}
        if k >= 1:
            ranks = complete.rank(axis=1, ascending=False, method="average").mean()
            test["ranks"] = ranks.sort_values(kind="stable")
        if k >= 3 and n >= 2:
            # imported here: scikit-posthocs brings statsmodels, seconds to import
            import scikit_posthocs
            from scipy.stats import friedmanchisquare, studentized_range

            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)   # every block tied
                result = friedmanchisquare(*(complete[c].to_numpy() for c in complete.columns))
                pvalues = scikit_posthocs.posthoc_nemenyi_friedman(complete)
            q = studentized_range.ppf(1 - ALPHA, k, np.inf) / np.sqrt(2)
            test.update(statistic=float(result.statistic), pvalue=float(result.pvalue),
                        cd=float(q * np.sqrt(k * (k + 1) / (6 * n))), pvalues=pvalues,
                        cliques=cliques(test["ranks"], pvalues, alpha=ALPHA))
        tests.append(test)
    return tests


def cliques(ranks, pvalues, *, alpha):
    """Maximal runs of methods, consecutive in rank order (``ranks``, best first), whose
    pairwise post-hoc p-values all exceed ``alpha``: the groups a CD diagram joins."""
    order = list(ranks.index)
    p = pvalues.reindex(index=order, columns=order).fillna(1.0).to_numpy(copy=True)
    np.fill_diagonal(p, 1.0)                # a method never differs from itself
    found, reach = [], -1
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and (p[i:j + 2, i:j + 2] > alpha).all():
            j += 1
        if j > i and j > reach:
            found.append(order[i:j + 1])
            reach = j
    return found


def friedman_table(tests):
    return pd.DataFrame([{k: t[k] for k in ("dataset", "hardness", "methods", "blocks",
                                            "statistic", "pvalue", "cd", "left_out")}
                         for t in tests])


def posthoc_table(tests):
    rows = []
    for t in tests:
        for a in t["pvalues"].index:
            for b in t["pvalues"].columns:
                rows.append({"dataset": t["dataset"], "hardness": t["hardness"],
                             "method_a": a, "method_b": b, "pvalue": t["pvalues"].loc[a, b],
                             "rank_a": t["ranks"][a], "rank_b": t["ranks"][b]})
    return pd.DataFrame(rows)


def stability(frame, scores):
    """Seed stability per dataset, kind, ratio and method: mean (and std) Spearman
    correlation of the method's scores between every pair of seeds, on the samples both
    scored (:func:`raydiff.scores.metrics.seed_stability`)."""
    rows = []
    for (dataset, kind, ratio, method), part in frame.groupby([*CELL, "method"], sort=True):
        runs = [(scores[i].index.to_numpy(), scores[i].to_numpy()) for i in part.index]
        mean, std, pairs = seed_stability(runs)
        rows.append({"dataset": dataset, "hardness": kind, "ratio": ratio, "method": method,
                     "spearman_mean": mean, "spearman_std": std, "pairs": pairs,
                     "seeds": len(part)})
    return pd.DataFrame(rows)


# -- markdown and figures -------------------------------------------------------------------

def _cell(mean, std):
    if pd.isna(mean):
        return ""
    return f"{mean:.3f}" + ("" if pd.isna(std) else f" ± {std:.3f}")


def middle_ratio(ratios):
    """The proportion a kind's overview column shows: the middle one of its grid (0.2 of
    0.1 / 0.2 / 0.3; 0.1 of far-OOD's 0.05 / 0.1 / 0.2, as H-CAT's tables), the lower
    middle of an even count."""
    ratios = sorted(ratios)
    return ratios[(len(ratios) - 1) // 2]


def _kind_order(kinds):
    known = [k for k in HARDNESS_KINDS if k in kinds]
    return known + sorted(set(kinds) - set(known))


def overview_markdown(summary, ranks):
    """Per dataset, one table method x kind: AUPRC (mean ± std over seeds) at each kind's
    middle proportion, the best of each kind in bold, and each method's mean rank over
    every kind (the mean of its per-kind mean ranks); methods by that rank."""
    lines = []
    for dataset, part in summary.groupby("dataset", sort=True):
        kinds = _kind_order(part["hardness"].unique())
        at = {k: middle_ratio(part.loc[part["hardness"] == k, "ratio"].unique()) for k in kinds}
        cells = {k: part[(part["hardness"] == k) & (part["ratio"] == at[k])].set_index("method")
                 for k in kinds}
        rank = (ranks[(ranks["dataset"] == dataset) & (ranks["ratio"] == ALL)]
                .groupby("method")["rank_mean"].mean())
        methods = list(rank.sort_values(kind="stable").index)
        methods += sorted(set(part["method"]) - set(methods))
        head = ["method"] + [f"{k} @ {at[k]:g}" for k in kinds] + ["mean rank"]
        lines += [f"## Overview{' (' + str(dataset) + ')' if dataset else ''}", "",
                  "AUPRC at each kind's middle proportion (mean ± std over seeds, the best "
                  "per kind in bold); mean rank: the mean over kinds of the method's mean "
                  "rank over every (ratio, seed) of the kind. The tables below have every "
                  "proportion.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in methods:
            row = [method]
            for k in kinds:
                if method not in cells[k].index:
                    row.append("")
                    continue
                mean, std = cells[k].loc[method, ["auprc_mean", "auprc_std"]]
                best = np.isclose(mean, cells[k]["auprc_mean"].max())
                row.append(f"**{_cell(mean, std)}**" if best else _cell(mean, std))
            row.append(f"{rank[method]:.2f}" if method in rank.index else "")
            lines.append("| " + " | ".join(row) + " |")
        chance = [f"{cells[k]['hard_fraction'].mean():.3f}" for k in kinds]
        lines += ["| *chance* | " + " | ".join(chance) + " | |", ""]
    return "\n".join(lines)


def tables_markdown(summary, ranks, stable, tests):
    """One Markdown table per dataset and kind: per method AUPRC and AUROC (mean ± std
    over seeds) at each ratio, the mean rank over every (ratio, seed), and the mean seed
    stability; methods by mean rank, the best AUPRC of each ratio in bold."""
    by_kind = {(t["dataset"], t["hardness"]): t for t in tests}
    lines = ["# Hardness detection", "",
             "AUPRC: average precision with the hard samples as the positive class (chance = "
             "the hard fraction); rank: by AUPRC among the methods of each (ratio, seed), "
             "1 = best; stability: mean Spearman correlation of a method's scores between "
             "seeds. docs/hardness_benchmark.md has the protocol.", "",
             overview_markdown(summary, ranks)]
    for (dataset, kind), part in summary.groupby(KIND, sort=True):
        ratios = sorted(part["ratio"].unique())
        overall = ranks[(ranks["dataset"] == dataset) & (ranks["hardness"] == kind)
                        & (ranks["ratio"] == ALL)].set_index("method")
        spear = stable[(stable["dataset"] == dataset) & (stable["hardness"] == kind)
                       ].groupby("method")["spearman_mean"].mean()
        head = (["method"] + [f"AUPRC @ {r:g}" for r in ratios]
                + [f"AUROC @ {r:g}" for r in ratios] + ["mean rank", "stability"])
        seeds = int(part["seeds"].max())
        chance = ", ".join(f"{part.loc[part['ratio'] == r, 'hard_fraction'].mean():.3f} at "
                           f"p = {r:g}" for r in ratios)
        lines += [f"## {kind}" + (f" ({dataset})" if dataset else ""), "",
                  f"Mean ± std over {seeds} seed{'s' * (seeds != 1)}; chance AUPRC {chance}.",
                  "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        best = {r: part.loc[part["ratio"] == r, "auprc_mean"].max() for r in ratios}
        methods = list(overall.sort_values("rank_mean", kind="stable").index)
        methods += sorted(set(part["method"]) - set(methods))
        for method in methods:
            rows = part[part["method"] == method].set_index("ratio")
            cells = [method]
            for r in ratios:
                text = _cell(*rows.loc[r, ["auprc_mean", "auprc_std"]]) if r in rows.index else ""
                bold = r in rows.index and np.isclose(rows.loc[r, "auprc_mean"], best[r])
                cells.append(f"**{text}**" if text and bold else text)
            cells += [_cell(*rows.loc[r, ["auroc_mean", "auroc_std"]]) if r in rows.index
                      else "" for r in ratios]
            cells.append(f"{overall.loc[method, 'rank_mean']:.2f}" if method in overall.index
                         else "")
            cells.append(f"{spear[method]:.2f}" if method in spear.index
                         and pd.notna(spear[method]) else "")
            lines.append("| " + " | ".join(cells) + " |")
        test = by_kind.get((dataset, kind))
        lines.append("")
        if test is not None and pd.notna(test["pvalue"]):
            lines.append(f"Friedman test over {test['blocks']} blocks (ratio x seed) of "
                         f"{test['methods']} methods: chi² = {test['statistic']:.2f}, "
                         f"p = {test['pvalue']:.2g}; Nemenyi critical difference "
                         f"{test['cd']:.2f} (α = {ALPHA}).")
        elif test is not None:
            lines.append(f"No Friedman test: {test['methods']} methods in all of "
                         f"{test['blocks']} blocks (it needs 3 and 2).")
        if test is not None and test["left_out"]:
            lines.append(f"Left out of the test (missing in some block): {test['left_out']}.")
        lines.append("")
    return "\n".join(lines)


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "none"


def _cd_figures(ctx, tests):
    from raydiff.plots.hardness import cd_diagram

    several = len({t["dataset"] for t in tests}) > 1
    for t in tests:
        if not len(t["ranks"]) or pd.isna(t["pvalue"]):
            continue
        name = (f"hardness_cd_{_slug(t['dataset'])}_{_slug(t['hardness'])}.png" if several
                else f"hardness_cd_{_slug(t['hardness'])}.png")
        title = (f"{t['hardness']}{' on ' + str(t['dataset']) if t['dataset'] else ''}: "
                 f"mean rank by AUPRC over {t['blocks']} blocks (Friedman p = "
                 f"{t['pvalue']:.2g}, Nemenyi)")
        ctx.figure(name, cd_diagram(t["ranks"].to_dict(), t["cliques"], cd=t["cd"],
                                    title=title))


# the heatmap's panel titles when kinds have different grids: each kind's lowest p, ...
PLACES = ("lowest", "second", "third", "fourth", "fifth")


def heatmap_panels(summary, ranks):
    """[(panel title, methods x kinds frame of mean AUPRC)] for the heatmap: one panel per
    ratio when every kind of a dataset has the same ratios; otherwise (far-OOD at 5 / 10 /
    20 %, label noise at 10 / 20 / 30 %) one panel per position in each kind's grid (its
    lowest, next, ... ratio), each column naming its kind and ratio, so no panel is half
    empty. Methods by mean rank."""
    overall = ranks[ranks["ratio"] == ALL].groupby("method")["rank_mean"].mean()
    methods = list(overall.sort_values(kind="stable").index)
    methods += sorted(set(summary["method"]) - set(methods))
    panels = []
    for dataset, part in summary.groupby("dataset", sort=True):
        where = f"{dataset}, " if dataset else ""
        kinds = _kind_order(part["hardness"].unique())
        grids = {k: sorted(part.loc[part["hardness"] == k, "ratio"].unique()) for k in kinds}
        if len({tuple(g) for g in grids.values()}) == 1:
            for ratio in grids[kinds[0]]:
                cells = part[part["ratio"] == ratio]
                grid = cells.pivot_table(index="method", columns="hardness",
                                         values="auprc_mean", aggfunc="first")
                panels.append((f"{where}p = {ratio:g}",
                               grid.reindex(index=methods, columns=kinds)))
            continue
        for position in range(max(len(g) for g in grids.values())):
            at = {k: g[position] for k, g in grids.items() if position < len(g)}
            columns = {}
            for k, ratio in at.items():
                cells = part[(part["hardness"] == k) & (part["ratio"] == ratio)]
                columns[f"{k} ({ratio:g})"] = cells.set_index("method")["auprc_mean"]
            grid = pd.DataFrame(columns).reindex(index=methods)
            name = PLACES[position] if position < len(PLACES) else f"#{position + 1}"
            panels.append((f"{where}each kind's {name} p", grid))
    return panels


def _heatmap(ctx, summary, ranks):
    from raydiff.plots.hardness import method_kind_heatmap

    ctx.figure("hardness_auprc.png", method_kind_heatmap(
        heatmap_panels(summary, ranks),
        title="AUPRC (hard samples positive), mean over seeds; methods by mean rank"))


def build(ctx, runs):
    frame, scores = collect(ctx, runs)
    if not len(frame):
        return
    ctx.table("hardness_per_run.csv", frame)
    summary = summarise(frame)
    ctx.table("hardness_detection.csv", summary)
    ranked = block_ranks(frame)
    ranks = rank_table(ranked)
    ctx.table("hardness_ranks.csv", ranks)
    tests = friedman(ranked)
    ctx.table("hardness_friedman.csv", friedman_table(tests))
    posthoc = posthoc_table(tests)
    if len(posthoc):
        ctx.table("hardness_posthoc.csv", posthoc)
    stable = stability(frame, scores)
    ctx.table("hardness_stability.csv", stable)
    path = ctx.out / "hardness_tables.md"
    path.write_text(tables_markdown(summary, ranks, stable, tests))
    ctx.written.append(path)
    _heatmap(ctx, summary, ranks)
    _cd_figures(ctx, tests)
