"""Per-sample hardness scores: pure array functions, one score per sample, higher = harder.

Every score is registered in :data:`SCORES` under the input it needs, and called as
``fn(values, labels=observed_labels)`` -> (N,) float array:

==================  ===========================================================  ==========
input               values                                                       scores
==================  ===========================================================  ==========
``logits``          (N, C) raw logits of the final model                         confidence, energy, margin, small_loss
``trajectory``      (E, N, C) logits every sample got in training, per epoch     aum, cartography_*, forgetting
``early_logits``    (R, N, C) eval-mode logits of R models after an early epoch  el2n
``oof_probs``       (N, C) out-of-fold predicted probabilities                   confident learning's rank methods
``gradients``       (K, N, ...) input gradients at K checkpoints                 vog
``holdout``         (held_out (M, N), correct (M, N), ratios (M,)) of M models   cscore
                    on random subsets (:mod:`raydiff.scores.cscore`)
==================  ===========================================================  ==========

Experiments look scores up with :func:`get_score` (by name) or :func:`scores_for` (every
score of one input), so a new score registered here is computed by every experiment that
has its input, and ``tests/test_scores.py`` checks it against a planted truth. Detection
quality of a score against known noisy samples is in :mod:`raydiff.scores.metrics`.
"""

from raydiff.scores.confident_learning import RANK_METHODS, label_issue_score
from raydiff.scores.cscore import cscore, cscore_hardness, cscore_per_ratio
from raydiff.scores.dynamics import (aum, cartography_confidence, cartography_correctness,
                                     cartography_variability, el2n, forgetting_events)
from raydiff.scores.logits import confidence, energy, margin, small_loss
from raydiff.scores.metrics import (auroc, average_precision, detection, jaccard,
                                    overlap_zscore, precision_at_k, top_k, top_k_mask)
from raydiff.scores.vog import vog


def _rank_method(method):
    def score(pred_probs, *, labels):
        return label_issue_score(pred_probs, labels=labels, method=method)
    score.__name__ = method
    score.__doc__ = (f"Confident learning's ``{method}`` label-issue score of out-of-fold "
                     f"probabilities (N, C); see :func:`label_issue_score`.")
    return score


def _vog(gradients, *, labels=None):
    """:func:`raydiff.scores.vog.vog` of gradients (K, N, ...); ``labels`` ignored (VoG's
    class normalisation is :func:`raydiff.scores.vog.normalized_variants`)."""
    return vog(gradients)


def _cscore(holdout, *, labels=None):
    """1 - C-score of ``holdout`` = (held_out (M, N) bool, correct (M, N), ratios (M,)):
    :func:`raydiff.scores.cscore.cscore_hardness`; ``labels`` ignored (``correct`` is
    already judged against the observed label)."""
    held_out, correct, ratios = holdout
    return cscore_hardness(held_out, correct, ratios)


SCORES = {
    "logits": {"confidence": confidence, "energy": energy, "margin": margin,
               "small_loss": small_loss},
    "trajectory": {"aum": aum, "cartography_confidence": cartography_confidence,
                   "cartography_correctness": cartography_correctness,
                   "cartography_variability": cartography_variability,
                   "forgetting": forgetting_events},
    "early_logits": {"el2n": el2n},
    "oof_probs": {m: _rank_method(m) for m in RANK_METHODS},
    "gradients": {"vog": _vog},
    "holdout": {"cscore": _cscore},
}
INPUTS = tuple(SCORES)


def scores_for(needs):
    """``{name: fn}`` of every score computed from input ``needs`` (a key of SCORES)."""
    if needs not in SCORES:
        raise ValueError(f"unknown score input {needs!r}; valid inputs: {list(SCORES)}")
    return dict(SCORES[needs])


def get_score(name):
    """Return the score function called ``name``; a ValueError lists the valid names."""
    for scores in SCORES.values():
        if name in scores:
            return scores[name]
    valid = sorted(n for scores in SCORES.values() for n in scores)
    raise ValueError(f"unknown score {name!r}; valid scores: {valid}")


def needs_of(name):
    """The input (a key of SCORES) score ``name`` is computed from."""
    get_score(name)
    return next(needs for needs, scores in SCORES.items() if name in scores)


__all__ = ["SCORES", "INPUTS", "get_score", "scores_for", "needs_of", "confidence", "energy",
           "margin", "small_loss", "auroc", "average_precision", "detection", "jaccard",
           "overlap_zscore", "precision_at_k", "top_k", "top_k_mask",
           "cscore", "cscore_hardness", "cscore_per_ratio"]
