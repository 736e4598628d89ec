"""Tolerances that follow from the arithmetic, for tests that compare two computations
which differ in float rounding only (a packed and a single training; two CPU kernels).

Which rounding a float32 computation gets depends on the CPU's kernels (AVX-512, AVX2,
the portable ones: ``ATEN_CPU_CAPABILITY``), so a tolerance chosen by looking at one
machine's numbers breaks on the next. These derive it instead:

* float32 training paths that add in another order drift apart by at most
  ``FLOAT32_DRIFT`` in a logit over the few epochs a test trains (the bound
  tests/test_packed.py holds packed against single logits to);
* a value stored as float16 moves by up to half a float16 step at its magnitude, so two
  such values that were ``d`` apart in float32 end up to ``d`` + one step apart;
* a score of the logits moves by at most its Lipschitz constant times the largest logit
  move. Every registered logit score (margins, softmax probabilities and their means,
  variances, cross-entropies, norms of ``softmax - onehot``) is at most 2-Lipschitz in the
  max-norm of one epoch's logits, and averaging over epochs keeps that bound;
* a decision (argmax, a top-k cut, a count of argmax changes) may flip only where its
  input sits within the tolerance of the decision boundary.
"""

import numpy as np
import pandas as pd

FLOAT32_DRIFT = 1e-4
SCORE_LIPSCHITZ = 2.0


def float16_step(values):
    """Elementwise spacing of float16 at the magnitude of ``values`` (array-like)."""
    magnitude = np.abs(np.asarray(values, dtype=np.float32)).astype(np.float16)
    return np.spacing(magnitude).astype(np.float64)


def stored_logit_tolerance(a, b):
    """Elementwise bound on ``|a - b|`` for logits from two float32 trainings that differ
    in rounding only, each stored as float16: the float32 drift plus one float16 step at
    the larger magnitude."""
    return FLOAT32_DRIFT + float16_step(np.maximum(np.abs(a), np.abs(b)))


def near_tie(logits, tol):
    """(N,) bool: samples whose top two logits come within ``tol`` of each other at any
    epoch of ``logits`` (E, N, C), where rounding may change the argmax."""
    top2 = np.sort(np.asarray(logits, dtype=np.float64), axis=-1)[..., -2:]
    return ((top2[..., 1] - top2[..., 0]) <= tol).any(axis=0)


def is_discrete(values, epochs):
    """Whether a score column counts events or averages 0/1 judgements over ``epochs``
    (every value a multiple of 1/epochs): it changes in steps, not continuously."""
    v = np.asarray(values, dtype=np.float64) * epochs
    return bool(np.all(np.abs(v - np.round(v)) < 1e-6))


def assert_topk_equal_up_to_ties(hard_a, hard_b, score_a, score_b, tol, what=""):
    """Two top-k decisions agree except on samples whose score lies within ``tol`` of the
    cut (the k-th highest score of either run)."""
    null_a, null_b = (pd.isna(pd.Series(h, dtype=object)).to_numpy() for h in (hard_a, hard_b))
    assert (null_a == null_b).all(), f"{what}: one run decided where the other did not"
    if null_a.all():
        return
    if null_a.any():            # classes left undecided: a per-class rule, not one cut
        decided = ~null_a
        assert (pd.Series(hard_a, dtype=object)[decided].to_numpy()
                == pd.Series(hard_b, dtype=object)[decided].to_numpy()).all(), what
        return
    a, b = (pd.Series(h, dtype=object).astype(bool).to_numpy() for h in (hard_a, hard_b))
    sa = np.asarray(score_a, dtype=np.float64)
    if a.all() or not a.any() or sa[a].min() < sa[~a].max():
        # not a global top-k cut of this score (stragglers, per-class cuts): no cut to tie at
        assert (a == b).all(), f"{what}: differs at samples {np.flatnonzero(a != b)[:10]}"
        return
    k = int(a.sum())
    assert k == int(b.sum()), f"{what}: {k} vs {int(b.sum())} samples decided hard"
    cut = [np.sort(np.asarray(s, dtype=np.float64))[::-1][k - 1] for s in (score_a, score_b)]
    near = ((np.abs(np.asarray(score_a) - cut[0]) <= tol)
            | (np.abs(np.asarray(score_b) - cut[1]) <= tol))
    differ = a != b
    assert not (differ & ~near).any(), (
        f"{what}: hard differs away from the top-k cut at samples "
        f"{np.flatnonzero(differ & ~near)[:10]}")
