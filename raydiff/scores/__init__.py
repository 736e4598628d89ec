"""Per-sample hardness scores: pure array functions, one score per sample, higher = harder.

Scores are looked up by name with :func:`get_score`; detection quality of a score against
a known set of noisy samples is measured with :mod:`raydiff.scores.metrics`.
"""

from raydiff.scores.logits import confidence, energy, margin
from raydiff.scores.metrics import (auroc, average_precision, jaccard, overlap_zscore,
                                    precision_at_k)

SCORES = {
    "confidence": confidence,
    "energy": energy,
    "margin": margin,
}


def get_score(name):
    """Return the score function called ``name``; a ValueError lists the valid names."""
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; valid scores: {sorted(SCORES)}") from None


__all__ = ["SCORES", "get_score", "confidence", "energy", "margin",
           "auroc", "average_precision", "jaccard", "overlap_zscore", "precision_at_k"]
