"""Confident learning over the gathered folds of a ``crossval`` stage.

Takes every ``crossval`` trial of its setting (``after: crossval``; they agree on seed,
noise and data), checks that their held-out parts cover each sample exactly once, and
runs cleanlab on the out-of-fold probabilities: every registered score of the
``oof_probs`` input is a ``score_<name>`` column (cleanlab's rank methods: one minus the
label quality), ``score`` is the one named by ``rank_method``, ``hard`` is cleanlab's set
of label issues (``filter_by``). Training
happened in the fold trials, so the cost of the method is theirs plus this trial's:
``upstream_seconds`` is the fold trials' time.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raydiff.experiments.base import per_sample_table
from raydiff.experiments.config import Common, choice
from raydiff.scores import compute_all, scores_for
from raydiff.scores.confident_learning import FILTERS, label_issues
from raydiff.scores.metrics import detection

NAME = "confident_learning"
GATHERS = ("crossval",)
NEEDS_DATA = False


@dataclass
class Config(Common):
    rank_method: str = choice("self_confidence", lambda: sorted(scores_for("oof_probs")))
    filter_by: str = choice("prune_by_noise_rate", list(FILTERS))


def gather_folds(tables, infos):
    """One out-of-fold table, sorted by sample_id, from the fold trials' ``oof.parquet``
    tables and ``crossval.json`` infos; a ValueError says which folds are missing or twice."""
    folds = {int(info["folds"]) for info in infos}
    if len(folds) != 1:
        raise ValueError(f"the gathered crossval trials disagree on `folds`: {sorted(folds)}; "
                         f"give the crossval stage one value of folds per setting")
    k = folds.pop()
    have = sorted(int(info["fold"]) for info in infos)
    if have != list(range(k)):
        raise ValueError(f"confident learning needs the out-of-fold predictions of folds "
                         f"0..{k - 1} exactly once, got folds {have}; set the crossval stage's "
                         f"`fold: {{grid: {list(range(k))}}}`")
    table = pd.concat(tables, ignore_index=True).sort_values("sample_id", kind="stable")
    if table["sample_id"].duplicated().any():
        raise ValueError("a sample is held out in two folds: the fold trials used different "
                         "splits (their seed, subset or labels differ)")
    return table.reset_index(drop=True)


def run(config, report, data=None):
    ups = report.upstreams("crossval")
    infos = [up.json("crossval.json") for up in ups]
    table = gather_folds([up.table("oof.parquet") for up in ups], infos)
    prob_cols = sorted((c for c in table.columns if c.startswith("p_")),
                       key=lambda c: int(c[2:]))
    probs = table[prob_cols].to_numpy(dtype=np.float64)
    observed = table["observed_label"].to_numpy()
    noisy = table["is_noisy"].to_numpy(dtype=bool)
    scores = compute_all("oof_probs", probs, observed)
    score = scores[config.rank_method]
    issues = label_issues(probs, labels=observed, filter_by=config.filter_by)
    report.table("per_sample.parquet", per_sample_table(
        sample_id=table["sample_id"], label=table["label"], observed_label=observed,
        is_noisy=noisy, is_hard=table.get("is_hard", table["is_noisy"]).to_numpy(dtype=bool),
        hardness=config.hardness, split="train", hard=issues, score=score,
        oof_predicted=probs.argmax(axis=1), fold=table["fold"].to_numpy(),
        **{f"score_{k}": v for k, v in scores.items()}))
    metrics = {"n_issues": int(issues.sum()), "folds": len(ups),
               "upstream_seconds": float(sum(info["seconds"] for info in infos)),
               "oof_true_accuracy": 100 * float((probs.argmax(1) == table["label"]).mean())}
    if noisy.any() and not noisy.all():
        metrics.update({f"detect_{k}": v for k, v in
                        detection(score, noisy, config.noise_ratio).items()})
        metrics["issue_precision"] = float(noisy[issues].mean()) if issues.any() else 0.0
        metrics["issue_recall"] = float(issues[noisy].mean())
    report(metrics)
    return metrics
