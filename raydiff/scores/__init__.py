"""Per-sample hardness scores: pure array functions, one score per sample, higher = harder.

Every score is registered in :data:`SCORES` under the input it needs, and called as
``fn(values, labels=observed_labels)`` -> (N,) float array:

===================  =========================================================  =====================
input                values                                                     experiment (PRODUCERS)
===================  =========================================================  =====================
``logits``           (N, C) raw logits of the final model                       identify, train_classifier
``embeddings``       (N, D) penultimate embeddings of the final model           train_classifier
``dropout_probs``    (T, N, C) softmax of T passes with dropout on              train_classifier (a
                                                                                model with dropout)
``augmented_probs``  (1 + A, N, C) softmax of the clean input, then A           train_classifier
                     augmented copies
``trajectory``       (E, N, C) logits every sample got in training, per epoch   dynamics
``early_logits``     (R, N, C) eval-mode logits of R models after an early      dynamics
                     epoch
``grad_norms``       (R, N) per-sample loss-gradient norms of those R models    dynamics
``oof_probs``        (N, C) out-of-fold predicted probabilities                 confident_learning
``gradients``        (K, N, ...) input gradients at K checkpoints, or the       vog
                     :class:`~raydiff.scores.vog.VoGAccumulator` that saw them
``holdout``          (held_out (M, N), correct (M, N), ratios (M,)) of M        cscore
                     models on random subsets (:mod:`raydiff.scores.cscore`)
``detector_probs``   (N,) or (R, N) a learnt detector's probability of a wrong  detector
                     label
===================  =========================================================  =====================

Every experiment that produces an input computes every score registered under it (one
``score_<name>`` column each in its ``per_sample.parquet``; ``score`` stays the method the
experiment's config picks) through :func:`compute_all`, so adding a score of an existing
input is two steps: the function and its entry here. ``tests/test_scores.py`` checks every
entry against a planted truth (direction included: higher = harder) and
``tests/test_hardness_methods.py`` that every registered score reaches a
``per_sample.parquet`` (the experiments of :data:`PRODUCERS`). Detection quality of a
score against known noisy samples is in :mod:`raydiff.scores.metrics`.
"""

import numpy as np

from raydiff.scores.confident_learning import RANK_METHODS, label_issue_score
from raydiff.scores.cscore import cscore, cscore_hardness, cscore_per_ratio
from raydiff.scores.dynamics import (aum, cartography_confidence, cartography_correctness,
                                     cartography_variability, dataiq_aleatoric, dataiq_hard,
                                     el2n, forgetting_events, grand, large_loss)
from raydiff.scores.logits import confidence, energy, margin, small_loss
from raydiff.scores.metrics import (auroc, average_precision, detection, jaccard,
                                    overlap_zscore, precision_at_k, top_k, top_k_mask)
from raydiff.scores.representation import allsh, detector, mc_dropout, prototypicality
from raydiff.scores.vog import class_normalize, complete_vog


def _rank_method(method):
    def score(pred_probs, *, labels):
        return label_issue_score(pred_probs, labels=labels, method=method)
    score.__name__ = method
    score.__doc__ = (f"Confident learning's ``{method}`` label-issue score of out-of-fold "
                     f"probabilities (N, C); see :func:`label_issue_score`.")
    return score


def _vog(gradients, *, labels=None):
    """Raw VoG over every checkpoint (:func:`raydiff.scores.vog.complete_vog`) of
    ``gradients`` (K, N, ...) or a filled VoGAccumulator; ``labels`` ignored."""
    return complete_vog(gradients)


def _vog_norm(gradients, *, labels):
    """VoG normalised within each class of ``labels``: ``(VoG - mu_c) / sigma_c``
    (:func:`raydiff.scores.vog.class_normalize`), the variant the VoG paper ranks by."""
    return class_normalize(complete_vog(gradients), labels)


def _cscore(holdout, *, labels=None):
    """1 - C-score of ``holdout`` = (held_out (M, N) bool, correct (M, N), ratios (M,)):
    :func:`raydiff.scores.cscore.cscore_hardness`; ``labels`` ignored (``correct`` is
    already judged against the observed label)."""
    held_out, correct, ratios = holdout
    return cscore_hardness(held_out, correct, ratios)


SCORES = {
    "logits": {"confidence": confidence, "energy": energy, "margin": margin,
               "small_loss": small_loss},
    "embeddings": {"prototypicality": prototypicality},
    "dropout_probs": {"mc_dropout": mc_dropout},
    "augmented_probs": {"allsh": allsh},
    "trajectory": {"aum": aum, "cartography_confidence": cartography_confidence,
                   "cartography_correctness": cartography_correctness,
                   "cartography_variability": cartography_variability,
                   "dataiq_aleatoric": dataiq_aleatoric, "dataiq_hard": dataiq_hard,
                   "forgetting": forgetting_events, "large_loss": large_loss},
    "early_logits": {"el2n": el2n},
    "grad_norms": {"grand": grand},
    "oof_probs": {m: _rank_method(m) for m in RANK_METHODS},
    "gradients": {"vog": _vog, "vog_norm": _vog_norm},
    "holdout": {"cscore": _cscore},
    "detector_probs": {"detector": detector},
}
# the experiment(s) whose per_sample.parquet carries every score of each input; the
# registry test runs each once at smoke size and checks the columns
PRODUCERS = {
    "logits": ("identify", "train_classifier"),
    "embeddings": ("train_classifier",),
    "dropout_probs": ("train_classifier",),
    "augmented_probs": ("train_classifier",),
    "trajectory": ("dynamics",),
    "early_logits": ("dynamics",),
    "grad_norms": ("dynamics",),
    "oof_probs": ("confident_learning",),
    "gradients": ("vog",),
    "holdout": ("cscore",),
    "detector_probs": ("detector",),
}
INPUTS = tuple(SCORES)


def scores_for(needs):
    """``{name: fn}`` of every score computed from input ``needs`` (a key of SCORES)."""
    if needs not in SCORES:
        raise ValueError(f"unknown score input {needs!r}; valid inputs: {list(SCORES)}")
    return dict(SCORES[needs])


def compute_all(needs, values, labels):
    """``{name: (N,) float64 score}`` of every score registered under input ``needs``,
    each called as ``fn(values, labels=labels)``: what an experiment producing that input
    reports, one ``score_<name>`` column each."""
    return {name: np.asarray(fn(values, labels=labels), dtype=np.float64)
            for name, fn in scores_for(needs).items()}


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


__all__ = ["SCORES", "INPUTS", "PRODUCERS", "get_score", "scores_for", "compute_all",
           "needs_of", "confidence", "energy",
           "margin", "small_loss", "auroc", "average_precision", "detection", "jaccard",
           "overlap_zscore", "precision_at_k", "top_k", "top_k_mask",
           "cscore", "cscore_hardness", "cscore_per_ratio"]
