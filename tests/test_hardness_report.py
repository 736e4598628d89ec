"""The hardness benchmark's protocol on planted truth: detection metrics that treat tied
scores as scikit-learn does, ranks, the Friedman test and its critical-difference diagram,
seed stability, and the report on hand-made per-sample tables (new and older layouts)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from raydiff.report import FolderContext, build_report
from raydiff.report import hardness
from raydiff.scores.metrics import (average_precision, auroc, hardness_detection,
                                    precision_at_k, seed_stability)


# -- metrics ----------------------------------------------------------------------------------

def test_average_precision_and_auroc_equal_sklearn_on_scores_with_many_ties():
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(2, 400))
        levels = int(rng.integers(1, 12))          # counts, epochs, accuracies: few values
        score = rng.integers(0, levels, n).astype(float)
        if trial % 3 == 0:
            score = np.round(rng.random(n), 1)
        positive = rng.random(n) < rng.uniform(0.05, 0.6)
        if positive.sum() == 0:
            continue
        assert average_precision(score, positive) == pytest.approx(
            average_precision_score(positive, score), abs=1e-12)
        if positive.all():
            continue
        assert auroc(score, positive) == pytest.approx(roc_auc_score(positive, score),
                                                       abs=1e-12)


def test_tied_scores_do_not_depend_on_the_sample_order():
    # one tie group holding every positive and as many negatives: the old index-ordered
    # AP gave 1.0 when the positives came first and 0.5 + ... when they came last
    score = np.array([1.0, 1, 1, 1, 0, 0])
    first = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    last = np.array([0, 0, 1, 1, 0, 0], dtype=bool)
    assert average_precision(score, first) == average_precision(score, last) == 0.5
    assert average_precision_score(first, score) == 0.5
    # precision at k = 2 inside the tie: the expected share, whatever the order
    assert precision_at_k(score, first, k=2) == precision_at_k(score, last, k=2) == 0.5
    assert precision_at_k(np.array([3.0, 1, 1, 0]), np.array([1, 1, 0, 0], bool), k=2) == 0.75


def test_hardness_detection_takes_the_hard_samples_as_positives():
    hard = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    perfect = hard + np.linspace(0, 0.1, 10)
    assert hardness_detection(perfect, hard) == {"auprc": 1.0, "auroc": 1.0,
                                                 "precision_at_k": 1.0}
    inverted = hardness_detection(-perfect, hard)
    assert inverted["auroc"] == 0.0 and inverted["precision_at_k"] == 0.0
    # the clean samples as positives (another protocol) would score the inverted one high
    assert average_precision(-perfect, ~hard) == 1.0 and inverted["auprc"] < 0.25
    assert all(np.isnan(v) for v in hardness_detection(perfect, np.zeros(10, bool)).values())


def test_seed_stability_is_one_for_a_fixed_order_and_near_zero_for_a_random_one():
    rng = np.random.default_rng(1)
    ids = [rng.permutation(500)[:400] for _ in range(3)]       # overlapping samples
    fixed = [(i, np.sqrt(i + 1.0)) for i in ids]
    mean, std, pairs = seed_stability(fixed)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0) and pairs == 3
    noise = [(i, rng.random(len(i))) for i in ids]
    assert abs(seed_stability(noise)[0]) < 0.1
    assert np.isnan(seed_stability(fixed[:1])[0])               # one seed: no pair


def test_cliques_join_runs_of_methods_that_do_not_differ():
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 2.8, "d": 3.7})
    p = pd.DataFrame(0.001, index=list("abcd"), columns=list("abcd"))
    for x, y in [("a", "b"), ("b", "c"), ("c", "d")]:
        p.loc[x, y] = p.loc[y, x] = 0.5
    assert hardness.cliques(ranks, p, alpha=0.05) == [["a", "b"], ["b", "c"], ["c", "d"]]
    p.loc["a", "c"] = p.loc["c", "a"] = 0.3
    assert hardness.cliques(ranks, p, alpha=0.05) == [["a", "b", "c"], ["c", "d"]]


# -- the report on hand-made tables -------------------------------------------------------------

N = 400
SEEDS = (0, 1, 2)
RATIOS = (0.1, 0.2)
KINDS = ("near_ood", "pair")


def _hard(kind, ratio, seed):
    rng = np.random.default_rng([seed, int(ratio * 100), KINDS.index(kind)])
    hard = np.zeros(N, dtype=bool)
    hard[rng.choice(N, int(N * ratio), replace=False)] = True
    return hard, rng


def write_runs(root):
    """One ``dyn`` run per kind, ratio and seed, in the new layout (``hardness``,
    ``is_hard``, every score a ``score_<name>`` column, ``score`` = one of them): a perfect
    method, an inverted one, one ordering the samples at random anew every seed, and one
    ordering them by sample id whatever the seed."""
    rows = []
    for kind, ratio, seed in itertools.product(KINDS, RATIOS, SEEDS):
        hard, rng = _hard(kind, ratio, seed)
        perfect = hard + rng.random(N) * 0.5
        ids = np.arange(N)
        table = pd.DataFrame({"sample_id": ids, "label": ids % 4, "observed_label": ids % 4,
                              "is_noisy": hard if kind == "pair" else False, "is_hard": hard,
                              "hardness": kind, "split": "train", "hard": None,
                              "score": perfect, "score_perfect": perfect,
                              "score_inverted": -perfect, "score_random": rng.random(N),
                              "score_fixed": np.cos(ids * 0.37)})
        # a held-out test split is not scored
        test = table.iloc[:20].assign(sample_id=np.arange(N, N + 20), split="test",
                                      is_hard=True, score_inverted=1e9)
        run_id = f"dyn-{kind}-{ratio}-{seed}"
        (root / run_id).mkdir(parents=True)
        pd.concat([table, test]).to_parquet(root / run_id / "per_sample.parquet")
        rows.append({"run_id": run_id, "stage": "dyn", "experiment": "dynamics",
                     "status": "FINISHED", "dataset": "toy", "hardness": kind,
                     "hardness_ratio": ratio, "seed": seed, "trial_seconds": 1.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardness")
    runs = write_runs(root / "runs")
    ctx = FolderContext(runs, root / "out", root / "runs")
    written = {p.name for p in build_report(ctx)}
    return root / "out", written


def test_report_writes_every_table_and_figure(report):
    out, written = report
    assert {"hardness_per_run.csv", "hardness_detection.csv", "hardness_ranks.csv",
            "hardness_stability.csv", "hardness_friedman.csv", "hardness_posthoc.csv",
            "hardness_tables.md", "hardness_auprc.png", "hardness_cd_near_ood.png",
            "hardness_cd_pair.png"} <= written
    for name in written:
        assert (out / name).stat().st_size > 0
    # the noisy-label benchmark still reads the label-noise kind alone
    assert "benchmark_detection.csv" in written
    assert set(pd.read_csv(out / "benchmark_detection.csv")["noise_kind"]) == {"pair"}


def test_detection_planted_truth(report):
    out, _ = report
    summary = pd.read_csv(out / "hardness_detection.csv")
    assert {"hardness", "ratio", "method", "auprc_mean", "auprc_std", "auroc_mean",
            "auroc_std", "precision_at_k_mean", "seeds"} <= set(summary.columns)
    assert set(summary["method"]) == {"perfect", "inverted", "random", "fixed"}  # no "dyn"
    assert set(summary["hardness"]) == set(KINDS) and (summary["seeds"] == 3).all()
    cell = summary.set_index(["hardness", "ratio", "method"])
    for kind, ratio in itertools.product(KINDS, RATIOS):
        assert cell.loc[(kind, ratio, "perfect"), "auprc_mean"] == 1.0
        assert cell.loc[(kind, ratio, "perfect"), "precision_at_k_mean"] == 1.0
        assert cell.loc[(kind, ratio, "inverted"), "auroc_mean"] == 0.0   # the test split
        chance = cell.loc[(kind, ratio, "random"), "hard_fraction"]      # is not scored
        assert chance == pytest.approx(ratio)
        assert abs(cell.loc[(kind, ratio, "random"), "auprc_mean"] - chance) < 0.08


def test_the_tables_open_on_an_overview_of_method_by_kind(report):
    from raydiff.report.hardness import middle_ratio
    assert middle_ratio([0.3, 0.1, 0.2]) == 0.2 and middle_ratio([0.05, 0.1, 0.2]) == 0.1
    out, _ = report
    text = (out / "hardness_tables.md").read_text()
    overview = text[text.index("## Overview"):text.index("## near_ood")]
    rows = [line for line in overview.splitlines() if line.startswith("| ")]
    # kinds in the order of docs/hardness.md (label kinds first), at the middle ratio
    assert rows[0] == "| method | pair @ 0.1 | near_ood @ 0.1 | mean rank |"
    assert rows[1].startswith("| perfect | **1.000 ± 0.000** | **1.000 ± 0.000** | 1.00")
    assert rows[-2].startswith("| inverted |")            # methods by mean rank
    assert rows[-1].startswith("| *chance* | 0.100 | 0.100")


def test_the_heatmap_has_a_panel_per_ratio_or_per_place_in_each_kinds_grid():
    from raydiff.report.hardness import heatmap_panels
    rows = [{"dataset": "d", "hardness": k, "ratio": r, "method": m, "auprc_mean": a}
            for k, grid in (("uniform", (0.1, 0.2, 0.3)), ("zoom", (0.05, 0.1, 0.2)))
            for r in grid for m, a in (("good", 0.9), ("bad", 0.1))]
    ranks = pd.DataFrame({"method": ["good", "bad"], "ratio": ["all", "all"],
                          "rank_mean": [1.0, 2.0]})
    panels = heatmap_panels(pd.DataFrame(rows), ranks)
    assert [t for t, _ in panels] == ["d, each kind's lowest p", "d, each kind's second p",
                                      "d, each kind's third p"]
    lowest = panels[0][1]
    assert list(lowest.columns) == ["uniform (0.1)", "zoom (0.05)"]   # label kinds first
    assert list(lowest.index) == ["good", "bad"] and not lowest.isna().any().any()
    # kinds that share their ratios: one panel per ratio, as before
    same = pd.DataFrame([r for r in rows if r["hardness"] == "uniform"])
    assert [t for t, _ in heatmap_panels(same, ranks)] == ["d, p = 0.1", "d, p = 0.2",
                                                           "d, p = 0.3"]


def test_ranks_friedman_and_critical_difference(report):
    out, _ = report
    ranks = pd.read_csv(out / "hardness_ranks.csv", dtype={"ratio": str})
    at = ranks.set_index(["hardness", "ratio", "method"])
    for kind in KINDS:
        for ratio in ("0.1", "0.2", "all"):
            assert at.loc[(kind, ratio, "perfect"), "rank_mean"] == 1.0
            assert at.loc[(kind, ratio, "inverted"), "rank_mean"] == 4.0
        assert at.loc[(kind, "all", "perfect"), "blocks"] == 6        # 2 ratios x 3 seeds
        assert at.loc[(kind, "0.1", "perfect"), "blocks"] == 3
    tests = pd.read_csv(out / "hardness_friedman.csv").set_index("hardness")
    for kind in KINDS:
        assert tests.loc[kind, "blocks"] == 6 and tests.loc[kind, "methods"] == 4
        assert tests.loc[kind, "pvalue"] < 0.01
        # Demšar's Nemenyi CD for 4 methods over 6 blocks: 2.569 * sqrt(4 * 5 / 36)
        assert tests.loc[kind, "cd"] == pytest.approx(2.569 * np.sqrt(20 / 36), abs=2e-3)
    posthoc = pd.read_csv(out / "hardness_posthoc.csv").set_index(
        ["hardness", "method_a", "method_b"])
    assert posthoc.loc[("pair", "perfect", "inverted"), "pvalue"] < 0.05
    markdown = (out / "hardness_tables.md").read_text()
    for kind in KINDS:
        section = markdown.split(f"## {kind} (toy)")[1].split("## ")[0]
        rows = [line for line in section.splitlines() if line.startswith("| ")]
        assert rows[1].startswith("| perfect |") and rows[-1].startswith("| inverted |")
        assert "| **1.000 ± 0.000** | **1.000 ± 0.000** |" in section
        assert "Friedman test over 6 blocks" in section


def test_seed_stability_planted(report):
    out, _ = report
    stable = pd.read_csv(out / "hardness_stability.csv").set_index(
        ["hardness", "ratio", "method"])
    for kind, ratio in itertools.product(KINDS, RATIOS):
        assert stable.loc[(kind, ratio, "fixed"), "spearman_mean"] == pytest.approx(1.0)
        assert stable.loc[(kind, ratio, "fixed"), "pairs"] == 3
        assert abs(stable.loc[(kind, ratio, "random"), "spearman_mean"]) < 0.15


def test_cd_groups_keep_the_best_and_the_worst_apart():
    frame = pd.DataFrame([{"dataset": "", "hardness": "k", "ratio": 0.1, "seed": s,
                           "method": m, "auprc": v}
                          for s in range(8) for m, v in
                          [("best", 0.9), ("mid", 0.5 + 0.01 * s), ("alsomid", 0.55),
                           ("worst", 0.1)]])
    (test,) = hardness.friedman(hardness.block_ranks(frame))
    assert list(test["ranks"].index)[0] == "best" and test["ranks"]["worst"] == 4.0
    assert not any({"best", "worst"} <= set(c) for c in test["cliques"])
    assert any({"mid", "alsomid"} <= set(c) for c in test["cliques"])
    # two methods only: ranks but no test
    (two,) = hardness.friedman(hardness.block_ranks(frame[frame["method"].isin(["best",
                                                                               "worst"])]))
    assert np.isnan(two["pvalue"]) and two["ranks"]["best"] == 1.0


def test_older_tables_fall_back_to_is_noisy_and_noise_kind(tmp_path):
    """Tables from before ``hardness``/``is_hard``: truth from ``is_noisy``, kind from the
    run's ``noise_kind`` or uniform; a stage's own ``score`` is a method named after it, a
    ``score_<name>`` that differs between the runs of a model grid is one method per
    model, one that agrees between the runs of a strategy grid counts once."""
    rows = []
    for i, (stage, extra, seed) in enumerate(itertools.product(
            ["cl", "identify", "dp"], [{}, {"noise_kind": "pair"}], (0, 1))):
        hard, rng = _hard("pair", 0.2, seed)
        variants = {"identify": [{"strategy": "stragglers"}, {"strategy": "energy"}],
                    "dp": [{"model": "a"}, {"model": "b"}]}.get(stage, [{}])
        for j, variant in enumerate(variants):
            table = pd.DataFrame({"sample_id": np.arange(N), "is_noisy": hard,
                                  "score": hard + rng.random(N)})
            if stage == "identify":                  # one training, every strategy's scores
                table["score_stragglers"] = hard * 2.0 + np.arange(N) / N
                table["score_energy"] = np.arange(N) / N
                table["score"] = table[f"score_{variant['strategy']}"]
            if stage == "dp":
                table["score"] = table["score_sigma"] = hard * (1.0 if j == 0 else -1.0)
            run_id = f"{stage}-{i}-{j}"
            (tmp_path / run_id).mkdir()
            table.to_parquet(tmp_path / run_id / "per_sample.parquet")
            rows.append({"run_id": run_id, "stage": stage, "experiment": stage,
                         "dataset": "toy", "noise_ratio": 0.2, "seed": seed, **extra,
                         **variant})
    runs = pd.DataFrame(rows)
    frame, _ = hardness.collect(FolderContext(runs, tmp_path / "o", tmp_path), runs)
    assert set(frame["hardness"]) == {"uniform", "pair"}
    assert set(frame["method"]) == {"cl", "stragglers", "energy", "sigma[model=a]",
                                    "sigma[model=b]"}
    counts = frame.groupby(["method", "hardness"]).size()
    assert (counts == 2).all()                       # one entry per seed
    cell = frame.set_index(["method", "hardness", "seed"])
    assert cell.loc[("sigma[model=a]", "pair", 0), "auprc"] == 1.0
    assert cell.loc[("sigma[model=b]", "pair", 0), "auroc"] == 0.0


def test_one_run_gives_tables_but_no_test_or_cd_diagram(tmp_path):
    runs = write_runs(tmp_path / "runs").iloc[:1]
    ctx = FolderContext(runs, tmp_path / "out", tmp_path / "runs")
    hardness.build(ctx, runs)
    written = {p.name for p in ctx.written}
    assert {"hardness_detection.csv", "hardness_ranks.csv", "hardness_stability.csv",
            "hardness_tables.md", "hardness_auprc.png"} <= written
    assert not any(name.startswith("hardness_cd_") for name in written)
    assert np.isnan(pd.read_csv(tmp_path / "out" / "hardness_friedman.csv")["pvalue"]).all()
    assert "No Friedman test: 4 methods in all of 1 blocks" in (
        tmp_path / "out" / "hardness_tables.md").read_text()
    assert pd.read_csv(tmp_path / "out" / "hardness_stability.csv")["pairs"].eq(0).all()
