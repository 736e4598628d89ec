import numpy as np
import pytest

from raydiff.scores import auroc, average_precision, confidence, energy, get_score, margin
from raydiff.scores import precision_at_k


def test_confidence_and_energy_rank_flat_logits_harder():
    peaked = np.array([[10.0, 0, 0], [0, 8.0, 0]])
    flat = np.array([[0.3, 0.2, 0.1], [0.1, 0.1, 0.2]])
    logits = np.vstack([peaked, flat])
    for score in (confidence(logits), energy(logits)):
        assert score[2:].min() > score[:2].max()


def test_energy_matches_definition_and_temperature():
    logits = np.array([[1.0, 2.0, 3.0]])
    assert energy(logits)[0] == pytest.approx(-np.log(np.exp(logits).sum()))
    assert energy(logits, temperature=2.0)[0] == pytest.approx(-2 * np.log(np.exp(logits / 2).sum()))
    with pytest.raises(ValueError, match="temperature"):
        energy(logits, temperature=0)


def test_margin_positive_exactly_when_misclassified():
    logits = np.array([[3.0, 1.0], [1.0, 3.0]])
    assert list(margin(logits, labels=[0, 0]) > 0) == [False, True]


def test_detection_metrics_perfect_reversed_and_random():
    positive = np.array([1, 1, 0, 0, 0], dtype=bool)
    perfect = np.array([5.0, 4, 3, 2, 1])
    assert auroc(perfect, positive) == 1.0
    assert auroc(-perfect, positive) == 0.0
    assert average_precision(perfect, positive) == 1.0
    assert precision_at_k(perfect, positive, k=2) == 1.0
    assert precision_at_k(perfect, positive, k=0.4) == 1.0
    rng = np.random.default_rng(0)
    many = rng.random(20000) < 0.2
    assert auroc(rng.random(20000), many) == pytest.approx(0.5, abs=0.02)
    assert average_precision(rng.random(20000), many) == pytest.approx(0.2, abs=0.02)


def test_unknown_score_lists_valid_names():
    with pytest.raises(ValueError, match="confidence"):
        get_score("nope")
